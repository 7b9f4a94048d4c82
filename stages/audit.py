"""The promotion audit trail: who moved which model to production, and why.

Every decision of ``mlops promote`` (promoted or refused) is one JSON entry,
kept in two places:

- a tag ``mlops.audit.<UTC time>`` on the registered model in MLflow, which
  lives as long as the registry and is readable from any clone that can reach
  the tracking server (CI runners are thrown away after each run), and
- one line of ``audit/promotions.jsonl`` in the repository, a plain file to
  read, grep and commit beside the code it describes.

``python -m stages.audit [--at WHEN] [--all] [--json]`` prints the history
from the MLflow tags (``mlops history``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from stages import common, lookups, run_then_leave

KIND = "history"
TAG_PREFIX = "mlops.audit."
LOG_FILE = Path("audit") / "promotions.jsonl"
PROMOTED = "promoted"
REFUSED = "refused"
ROLLED_BACK = "rolled-back"
# The outcomes that move the production alias: ``version`` serves afterwards.
MOVES_PRODUCTION = (PROMOTED, ROLLED_BACK)
# MLflow's SQL stores keep a registered-model tag value in VARCHAR(5000).
MAX_TAG_CHARS = 5000
SHORT = 8
_GATE_KEYS = ("metric", "rule", "threshold", "value", "production_value", "passed")


def now_utc() -> datetime:
    """The current time in UTC (a function so tests can fix the clock)."""
    return datetime.now(UTC)


def actor(env: Mapping[str, str] | None = None) -> str:
    """Who is promoting: the GitHub actor in CI, else the git user, else $USER."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTOR"):
        return env["GITHUB_ACTOR"]
    git = shutil.which("git")
    if git:
        out = subprocess.run(
            [git, "config", "user.name"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return env.get("USER") or getpass.getuser()


def _gates(verdicts: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: g[k] for k in _GATE_KEYS if k in g} for g in verdicts.get("gates") or []
    ]


def build_entry(
    *,
    when: datetime,
    outcome: str,
    reason: str,
    model: str,
    version: str,
    previous: str | None,
    version_tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    verdicts: Mapping[str, Any],
) -> dict[str, Any]:
    """One audit entry; ``new_production`` is what holds the alias afterwards."""
    entry = {
        "time": when.astimezone(UTC).isoformat(timespec="seconds"),
        "outcome": outcome,
        "reason": reason,
        "model": model,
        "version": version,
        "previous": previous,
        "new_production": version if outcome in MOVES_PRODUCTION else previous,
        "actor": actor(),
        "head_commit": common.git_commit(),
        "train_commit": version_tags.get(common.TAG_GIT_COMMIT),
        # What the tree had on top of that commit: None when nothing.
        "train_changes": common.trained_changes(version_tags),
        "data_md5": version_tags.get(common.TAG_DATA_HASH),
        "run_id": version_tags.get("mlops.run_id"),
        "params": dict(params),
        "metrics": dict(metrics),
        "gates_passed": bool(verdicts.get("passed")),
        "gates": _gates(verdicts),
    }
    if len(encode(entry)) > MAX_TAG_CHARS:  # a huge param grid: keep the rest
        entry["params"] = {"truncated": True}
    return entry


def encode(entry: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON: one line in the log, one tag value in MLflow."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)


def tag_key(when: datetime) -> str:
    """``mlops.audit.20250102T030405.678901Z``: sorts by time, valid in MLflow."""
    return TAG_PREFIX + when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def record(client: Any, when: datetime, entry: Mapping[str, Any]) -> None:
    """Store the entry as a registered-model tag and append it to the log file."""
    store(client, when, entry)
    append_log(entry)


def store(client: Any, when: datetime, entry: Mapping[str, Any]) -> None:
    """The entry as a tag of its registered model: the record of truth."""
    client.set_registered_model_tag(entry["model"], tag_key(when), encode(entry))


def append_log(entry: Mapping[str, Any]) -> None:
    """The entry as one line of the log file, the copy kept beside the project."""
    common.ensure_parent(LOG_FILE)
    with LOG_FILE.open("a", encoding="utf-8") as f:
        f.write(encode(entry) + "\n")


def stored(client: Any, model: str, when: datetime) -> bool:
    """Whether the registry holds the entry written at ``when`` (read back after
    a failed write, whose answer may have been lost after the server acted)."""
    return tag_key(when) in (client.get_registered_model(model).tags or {})


def read_entries(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """Audit entries from a registered model's tags, oldest first."""
    entries = []
    for key in sorted(k for k in tags if k.startswith(TAG_PREFIX)):
        try:
            value = json.loads(tags[key])
        except json.JSONDecodeError:
            continue  # not ours to judge; a hand-written tag is skipped
        if isinstance(value, dict):
            entries.append(value)
    return sorted(entries, key=lambda e: str(e.get("time", "")))


def rolled_back_from(
    entries: Sequence[Mapping[str, Any]], version: str
) -> dict[str, Any] | None:
    """The last rollback away from ``version``, if production was taken off it."""
    found = None
    for e in entries:
        if e.get("outcome") == ROLLED_BACK and str(e.get("previous")) == version:
            found = dict(e)
    return found


def promoted_before(entries: Sequence[Mapping[str, Any]], version: str) -> str | None:
    """The version that served before ``version`` was last promoted, if any."""
    before = None
    for e in entries:
        if e.get("outcome") == PROMOTED and str(e.get("version")) == version:
            before = e.get("previous")
    return str(before) if before else None


def model_entries(client: Any, name: str) -> list[dict[str, Any]]:
    """The audit entries of a registered model (none if it does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return read_entries(client.get_registered_model(name).tags)
    except MlflowException as e:
        if lookups.absent(e):
            return []
        raise lookups.failure(e, f"get_registered_model({name!r})") from e


def parse_when(text: str) -> datetime:
    """A date or datetime in UTC; a bare date means the end of that day."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise common.StageError(
            f"--at {text!r} is not a date or datetime such as 2025-01-31 or "
            "2025-01-31T14:00:00Z"
        ) from e
    if len(text.strip()) == len("2025-01-31"):
        when = datetime.combine(when.date(), time.max)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def serving_at(entries: Sequence[Mapping[str, Any]], when: datetime) -> dict | None:
    """The last promotion or rollback at or before ``when``: what served then."""
    last = None
    for e in entries:
        if e.get("outcome") not in MOVES_PRODUCTION:
            continue
        if datetime.fromisoformat(str(e["time"])) <= when:
            last = dict(e)
    return last


def _short(value: Any) -> str:
    return str(value)[:SHORT] if value else "-"


def _metric_text(entry: Mapping[str, Any]) -> str:
    cand = (entry.get("metrics") or {}).get("candidate") or {}
    keys = [g["metric"] for g in entry.get("gates") or []] or sorted(cand)
    shown = dict.fromkeys(k for k in keys if k in cand)
    return " ".join(f"{k}={cand[k]:.4f}" for k in shown)


def table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows of the history table, with a header, columns padded to fit."""
    rows = [
        ("date (UTC)", "outcome", "version", "previous", "commit", "data", "metrics")
    ]
    for e in entries:
        rows.append(
            (
                str(e.get("time", "")).replace("T", " ").removesuffix("+00:00"),
                str(e.get("outcome", "")),
                f"v{e.get('version')}",
                f"v{e['previous']}" if e.get("previous") else "-",
                _short(e.get("train_commit"))
                + ("-dirty" if e.get("train_changes") else ""),
                _short(e.get("data_md5")),
                _metric_text(e),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True))
        + "  "
        + r[-1]
        for r in rows
    ]


def describe(entry: Mapping[str, Any], when: datetime) -> list[str]:
    """The answer to "which model served at ``when``, from which data and code"."""
    return [
        f"at {when.isoformat(timespec='seconds')}: {entry['model']} "
        f"version {entry['version']} was in production",
        f"  {'rolled back to' if entry.get('outcome') == ROLLED_BACK else 'promoted'}"
        f" {entry['time']} by {entry.get('actor')}"
        + (f", replacing version {entry['previous']}" if entry.get("previous") else ""),
        f"  code: commit {entry.get('train_commit') or 'unknown'}"
        + (
            f", with uncommitted changes to {entry['train_changes']}"
            if entry.get("train_changes")
            else ""
        ),
        f"  data: train split md5 {entry.get('data_md5') or 'unknown'}",
        f"  run:  {entry.get('run_id') or 'unknown'}",
        f"  metrics: {_metric_text(entry) or '-'}",
    ]


def _history(args: argparse.Namespace) -> int:
    import mlflow

    params = common.load_params()
    registry = params.get("registry") or {}
    name = str(registry.get("model") or common.project(params)["name"])
    mlflow.set_tracking_uri(common.tracking_uri(params))
    entries = model_entries(mlflow.MlflowClient(), name)
    if args.at:
        when = parse_when(args.at)
        entry = serving_at(entries, when)
        if entry is None:
            raise common.StageError(
                f"no version of {name} had been promoted by {when.isoformat()}"
            )
        lines = [encode(entry)] if args.json else describe(entry, when)
    else:
        shown = [e for e in entries if args.all or e.get("outcome") in MOVES_PRODUCTION]
        if args.json:
            lines = [encode(e) for e in shown]
        elif not shown:
            lines = [f"no promotions of {name} recorded yet"]
        else:
            lines = table(shown)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the promotion history, or the model that served at a given time."""
    ap = argparse.ArgumentParser(prog="python -m stages.audit")
    ap.add_argument("--at", help="a date or UTC datetime")
    ap.add_argument("--all", action="store_true", help="include refused promotions")
    ap.add_argument("--json", action="store_true", help="one JSON entry per line")
    args = ap.parse_args(argv)
    try:
        return lookups.guarded(_history)(args)
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1


if __name__ == "__main__":
    run_then_leave(main)
