"""`mlops retrain`: turn a drift verdict into the change a retraining PR holds.

After `mlops monitor` found drift, the labelled current rows (written by
``python -m stages.retrain``) go to ``data/retrain/<source>-<UTC date>.csv``
and that file is added to ``data.<source>.append`` in mlops.yaml, the source
the pipeline's ingest stage reads. Ingest concatenates the appended files
after the source, params.yaml's ``data.<source>`` changes and the file is a
dependency of ingest, so DVC retrains from ingest on; nothing else changes.

The spec is edited as text at the positions runner.yamlsource reports, never
dumped again, so its comments and layout stay as the team wrote them; the
result is validated before it is written. The generated files are compiled
and everything is committed on the checked-out branch. Pushing the branch and
opening the pull request is the monitor workflow's (it holds the token); what
it needs is left in ``.mlops/retrain/``: ``branch``, ``title`` and ``body.md``
(monitor's summary and a link to the run's drift report).

Same day, same data: nothing changes and nothing is committed.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runner import DEFAULT_SPEC, yamlsource
from runner.errors import RunError, SpecError
from runner.spec import Spec

Say = Callable[[str], None]
RETRAIN_DIR = "data/retrain"
BRANCH_PREFIX = "mlops/retrain-"
STATE_DIR = ".mlops/retrain"
MONITOR_RESULT = "monitor.json"
MONITOR_SUMMARY = "summary.md"
DRIFT = "drift"  # stages.monitor.DRIFT; the runner never imports stages
ARTIFACT = "mlops-monitor"  # the monitor workflow's artifact name
BRANCH_NAME = re.compile(r"^mlops/retrain-[0-9A-Za-z._-]+$")
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
APPEND = "append"


# -- the spec edit (pure text) ------------------------------------------------


def add_append(text: str, source: str, path: str, filename: str = DEFAULT_SPEC) -> str:
    """``text`` with ``path`` added to ``data.<source>.append``; unchanged if
    it is there already. Only lines are inserted, so every comment stays."""
    doc = yamlsource.load(text, filename)
    given = (doc.data.get("data") or {}).get(source)
    if not isinstance(given, dict):
        raise RunError(f"{filename}: no data source {source!r} under data:")
    if path in (given.get(APPEND) or []):
        return text
    lines = text.splitlines(keepends=True)
    where = ("data", source, APPEND) if APPEND in given else ("data", source)
    at = doc.values[where]
    row = lines[at.line - 1]
    if row[at.col - 1] in "[{":
        lines[at.line - 1] = _into_flow(
            row, at.col - 1, path, new_key=APPEND not in given
        )
    elif APPEND in given:
        last = doc.values[(*where, len(given[APPEND]) - 1)]
        dash = " " * (last.col - 3) + f"- {path}\n"
        lines.insert(last.line, dash)
    else:
        # Before the source's first key, at its indentation: block style.
        indent = " " * (at.col - 1)
        lines.insert(at.line - 1, f"{indent}{APPEND}:\n{indent}  - {path}\n")
    edited = "".join(lines)
    _check(edited, source, path, filename)
    return edited


def _into_flow(row: str, start: int, path: str, *, new_key: bool) -> str:
    """Add to a flow mapping `{...}` (a new key) or a flow list `[...]`."""
    if new_key:
        return f"{row[: start + 1]}{APPEND}: [{path}], {row[start + 1 :]}"
    end = row.index("]", start)
    inner = row[start + 1 : end].strip()
    return f"{row[:end].rstrip()}{', ' if inner else ''}{path}{row[end:]}"


def _check(edited: str, source: str, path: str, filename: str) -> None:
    from runner import spec as specs

    try:
        parsed = specs.parse(edited, filename)
    except SpecError as e:
        raise RunError(
            f"adding {path} to data.{source}.append would make {filename} invalid "
            f"({e.lines()[0]}); add it by hand"
        ) from e
    if parsed.data[source].get(APPEND, [])[-1:] != [path]:
        raise RunError(
            f"{filename}: could not add {path} to data.{source}.append safely "
            "(an unusual layout); add it by hand"
        )


# -- what the pull request says ----------------------------------------------


def run_url(env: Mapping[str, str]) -> str | None:
    """The workflow run's page, where its artifacts are, on GitHub."""
    parts = [env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY")]
    run_id = env.get("GITHUB_RUN_ID")
    if not all(parts) or not run_id:
        return None
    return f"{parts[0]}/{parts[1]}/actions/runs/{run_id}"


def body(
    summary: str, *, source: str, data_file: str, rows: int, env: Mapping[str, str]
) -> str:
    """The pull request's body: what changed, the drift report, the summary."""
    url = run_url(env)
    report = (
        f"[the monitor run]({url}), artifact `{ARTIFACT}` (report.html, monitor.json)"
        if url
        else "`.mlops/monitor/report.html` where `mlops monitor` ran"
    )
    return "\n".join(
        [
            "Production data drifted from the data the production model was "
            f"trained on. This pull request adds its {rows} labelled rows, "
            f"`{data_file}`, to `data.{source}.append` in mlops.yaml: the "
            "pipeline retrains on them, this pull request's report compares "
            "the retrained model with production, and merging it promotes it "
            "as usual.",
            "",
            f"Drift report: {report}.",
            "",
            summary.rstrip(),
            "",
        ]
    )


# -- the command --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    branch: str
    data_file: str
    committed: bool


def training_source(spec: Spec, given: str | None = None) -> str:
    """The source the ingest stage reads (the one to append to)."""
    used = sorted({s.settings["source"] for s in spec.stages if s.uses == "ingest"})
    if given:
        if given not in spec.data:
            raise RunError(f"--source {given!r}: no such source under data:")
        return given
    if len(used) != 1:
        raise RunError(
            f"ingest reads {len(used)} sources ({', '.join(used) or 'none'}): "
            "say which one to retrain with --source"
        )
    return used[0]


def _verdict(monitor_dir: Path) -> str:
    path = monitor_dir / MONITOR_RESULT
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["verdict"])
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{path}: no drift check to act on; run `mlops monitor`") from e


def _git(root: Path, *args: str) -> str:
    from runner import engine
    from runner.gitops import BOT_EMAIL, BOT_NAME

    env = engine.environment()
    for key, value in (("NAME", BOT_NAME), ("EMAIL", BOT_EMAIL)):
        for who in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{who}_{key}", value)
    proc = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RunError(f"git {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def run(
    root: Path,
    spec_file: Path,
    labelled_rows: Callable[[Path], int],
    *,
    date: str,
    monitor_dir: Path,
    source: str | None,
    branch: str | None,
    env: Mapping[str, str],
    say: Say,
) -> Outcome:
    """Write the rows, add them to the spec, compile, commit, leave the PR's text.

    ``labelled_rows(dest)`` writes the labelled current rows to ``dest`` and
    returns the exit code of ``python -m stages.retrain``.
    """
    from runner import compile as compiler
    from runner import spec as specs

    verdict = _verdict(monitor_dir)
    if verdict != DRIFT:
        raise RunError(f"the last drift check says {verdict!r}: nothing to retrain")
    if not DATE.match(date):
        raise RunError(f"--date {date!r} is not a date like 2026-12-01")
    branch = branch or f"{BRANCH_PREFIX}{date}"
    if not BRANCH_NAME.match(branch):
        raise RunError(f"--branch {branch!r} is not an mlops/retrain-… branch name")
    spec = specs.load(spec_file)
    name = training_source(spec, source)
    rel = f"{RETRAIN_DIR}/{name}-{date}.csv"
    if labelled_rows(root / rel) != 0:
        raise RunError("no labelled rows to retrain on (the reason is above)")
    text = spec_file.read_text(encoding="utf-8")
    spec_file.write_text(add_append(text, name, rel, spec.filename), encoding="utf-8")
    written = compiler.compile_to(specs.load(spec_file), root)
    paths = sorted({spec_file.resolve().relative_to(root).as_posix(), rel, *written})
    _git(root, "add", "--", *paths)
    committed = bool(_git(root, "status", "--porcelain", "--", *paths).strip())
    if committed:
        _git(
            root, "commit", "-q", "-m", f"Retrain on drifted data: {rel}", "--", *paths
        )
        say(f"committed {', '.join(paths)}")
    else:
        say(f"{rel} is in data.{name}.append already, with the same rows")
    rows = max(0, len((root / rel).read_text(encoding="utf-8").splitlines()) - 1)
    summary = (monitor_dir / MONITOR_SUMMARY).read_text(encoding="utf-8")
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    (state / "branch").write_text(branch + "\n", encoding="utf-8")
    (state / "title").write_text(
        f"Retrain {spec.registry['model']} on drifted data ({date})\n", encoding="utf-8"
    )
    (state / "body.md").write_text(
        body(summary, source=name, data_file=rel, rows=rows, env=env), encoding="utf-8"
    )
    say(f"retraining branch {branch}: pull request text in {STATE_DIR}/")
    return Outcome(branch, rel, committed)
