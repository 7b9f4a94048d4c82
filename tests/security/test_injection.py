"""Shell and template syntax planted in the spec never reaches a generated
file as code.

Every string value of tests/security/full.yaml (a spec with every field set)
and every name the user chooses (stage, data source, column, secret, label
keys) gets, one at a time, a payload of shell or template syntax. Each is
either refused by a rule, with an error at that field, or the compiled files
carry it only as data:

- every generated file loads as YAML;
- a shell script (a workflow step's `run:`, a DVC `cmd`, an Argo container's
  `sh -c` script) holds the value only shell-quoted; a `run:` stage's own
  command goes to dvc.yaml as written, by design, and nowhere else;
- no workflow holds it where GitHub evaluates `${{ }}` (any field), and no
  `run:` holds `${{` at all;
- no Argo manifest holds it where Argo substitutes `{{ }}` (any field);
- dvc.yaml holds no `${` from it outside that command (DVC interpolates `${}`).
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import compile as compiler
from runner import framework as fw
from runner import spec as specs
from runner.deploy_state import Release
from runner.errors import RunError, SpecError

FULL = Path(__file__).with_name("full.yaml")
BASE = yaml.safe_load(FULL.read_text())
MARK = "PWN7Q"
PAYLOADS = {
    # The shell's metacharacters in one value: a field either refuses them
    # (a name or pattern refuses each of them) or must quote them all.
    "shell": f";touch {MARK}; $(touch {MARK}) `touch {MARK}` '\"\ntouch {MARK}",
    "github-expression": f"${{{{ github.event.{MARK} }}}}",
    "template": f"{{{{ {MARK} }}}}",
    "argo-expression": f"{{{{workflow.name}}}}{MARK}",
}
TEMPLATES = ("github-expression", "template", "argo-expression")
# Mappings whose keys the user names (everything else is the schema's words).
NAMED_KEYS = (
    ("data",),
    ("pipeline",),
    ("pipeline", "ingest", "secrets"),
    ("pipeline", "check", "with", "columns"),
    ("pipeline", "search", "with", "space"),
    ("pipeline", "train", "with", "params"),
    ("pipeline", "report", "with"),
    ("pipeline", "report", "secrets"),
    ("deploy", "secrets"),
    ("monitoring", "features"),
    ("ci", "secrets"),
    ("argo", "secrets"),
    ("argo", "node_selector"),
)
RUN_ID = "0123456789abcdef0123456789abcdef"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


def _strings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, str):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


SITES = [("value", p) for p in _strings(BASE)] + [
    ("key", (*parent, key)) for parent in NAMED_KEYS for key in _get(BASE, parent)
]


def _plant(kind: str, path: tuple[Any, ...], payload: str) -> tuple[Any, str]:
    """The spec with the payload appended at one site, and the planted text."""
    tree = copy.deepcopy(BASE)
    parent = _get(tree, path[:-1])
    last = path[-1]
    if kind == "value":
        planted = f"{parent[last]}{payload}"
        parent[last] = planted
    else:
        planted = f"{last}{payload}"
        # Keep the key's place, so that order-sensitive parts stay the same.
        items = [(planted if k == last else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)
    return tree, planted


def _walk(
    node: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, "<key>"), key
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def _scripts(name: str, data: Any) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string a shell runs: `run:` steps, DVC commands, `sh -c` scripts."""
    for path, node in _walk(data):
        if not isinstance(node, dict):
            continue
        if name.startswith(".github/") and isinstance(node.get("run"), str):
            yield (*path, "run"), node["run"]
        if name == "dvc.yaml" and isinstance(node.get("cmd"), str):
            yield (*path, "cmd"), node["cmd"]
        command = node.get("command")
        if isinstance(command, list) and command[-1:] == ["-c"]:
            for i, arg in enumerate(node.get("args", [])):
                yield (*path, "args", i), arg
        if isinstance(node.get("source"), str) and "image" in node:
            yield (*path, "source"), node["source"]


def _shell_violations(
    name: str, data: Any, planted: str, own_cmd: bool
) -> Iterator[str]:
    quoted = shlex.quote(planted)
    for where, script in _scripts(name, data):
        if MARK not in script:
            continue
        if name == "dvc.yaml" and own_cmd and script == planted:
            continue  # a `run:` stage's command, as the user wrote it
        if MARK in script.replace(quoted, ""):
            yield f"{name}: {where}: the value reaches a shell unquoted"


def _expression_violations(
    name: str, data: Any, payload_kind: str, own_cmd: bool
) -> Iterator[str]:
    payload = PAYLOADS[payload_kind]
    for where, node in _walk(data):
        if not isinstance(node, str) or MARK not in node:
            continue
        if name.startswith(".github/"):
            if where[-1] == "run" and "${{" in node:
                yield f"{name}: {where}: `${{{{` in a run: script"
            spans = re.findall(r"\$\{\{.*?\}\}", node, re.DOTALL)
            if any(MARK in s for s in spans):
                yield f"{name}: {where}: the value sits in a GitHub expression"
        if name.startswith("argo/") and payload_kind in TEMPLATES:
            spans = re.findall(r"\{\{.*?\}\}", node, re.DOTALL)
            if payload in node or any(MARK in s for s in spans):
                yield f"{name}: {where}: Argo would substitute the value's {{{{ }}}}"
        dvc_reads = name == "dvc.yaml" and "${" in payload and payload in node
        if dvc_reads and not (own_cmd and where[-1] == "cmd"):
            yield f"{name}: {where}: DVC would interpolate the value's ${{ }}"


def _violations(
    files: dict[str, str], planted: str, payload_kind: str, site: tuple[Any, ...]
) -> Iterator[str]:
    """Every place the planted value reaches as code, not data."""
    own_cmd = len(site) == 3 and site[0] == "pipeline" and site[-1] == "run"
    for name, text in files.items():
        if MARK not in text:
            continue  # the base spec's bytes, checked by test_the_base_compiles
        try:
            data = yaml.load(text, Loader=LOADER)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            yield f"{name} is not YAML any more: {exc}"
            continue
        yield from _shell_violations(name, data, planted, own_cmd)
        yield from _expression_violations(name, data, payload_kind, own_cmd)


def _refusal_names(
    exc: SpecError, kind: str, site: tuple[Any, ...], planted: str
) -> bool:
    """The error is at the field that was planted (or names its value)."""
    want = site if kind == "value" else (*site[:-1], planted)
    return any(
        p.path[: len(want)] == want
        or repr(planted) in p.message
        or planted in p.message
        for p in exc.problems
    )


RESULTS: dict[tuple[Any, ...], str] = {}
KUBERNETES_TEMPLATE = "kubernetes"
KSERVE_INSTALLED = "kserve-installed"


@pytest.mark.parametrize(
    ("kind", "site"), SITES, ids=[f"{k}:{'.'.join(map(str, p))}" for k, p in SITES]
)
def _compiled(tree: Any, variant: str) -> dict[str, str]:
    """The files of one compilation of the planted spec (SpecError, RunError)."""
    if variant == KSERVE_INSTALLED:
        tree["deploy"]["target"] = "kserve"
    spec = specs.parse(yaml.safe_dump(tree, sort_keys=False), "full.yaml")
    framework = (
        fw.installed(spec.ci.get("install"))
        if variant == KSERVE_INSTALLED
        else fw.TEMPLATE
    )
    release = Release(spec.registry["model"], "3", RUN_ID)
    return compiler.render(spec, release, framework)


def _variants(kind: str, site: tuple[Any, ...]) -> tuple[str, ...]:
    """Kubernetes manifests in a copy of this repository, for every site; and
    KServe in a repository with the framework installed (its workflows install
    `ci.install`, dvc.yaml runs `mlops stage`) where those differ."""
    differs = site[0] in ("project", "registry", "deploy", "ci") or (
        kind == "key" and site[:1] == ("pipeline",)
    )
    return (
        (KUBERNETES_TEMPLATE, KSERVE_INSTALLED) if differs else (KUBERNETES_TEMPLATE,)
    )


def _try(
    kind: str, site: tuple[Any, ...], payload_kind: str, variant: str
) -> tuple[str, list[str]]:
    """What became of one payload in one compilation: outcome, problems."""
    tree, planted = _plant(kind, site, PAYLOADS[payload_kind])
    try:
        files = _compiled(tree, variant)
    except SpecError as exc:
        named = _refusal_names(exc, kind, site, planted)
        return "refused", [] if named else [f"refused, not at the field: {exc.lines()}"]
    except RunError as exc:
        # A rule of a target, checked when it compiles: an error, exit 1.
        named = planted in str(exc) or repr(planted) in str(exc)
        return "refused by mlops compile", [] if named else [f"not naming it: {exc}"]
    reached = [n for n, t in files.items() if MARK in t]
    outcome = "data in " + ", ".join(reached) if reached else "absent"
    return outcome, list(_violations(files, planted, payload_kind, site))


@pytest.mark.parametrize(
    ("kind", "site"), SITES, ids=[f"{k}:{'.'.join(map(str, p))}" for k, p in SITES]
)
def test_planted_syntax_is_refused_or_only_data(
    kind: str, site: tuple[Any, ...], figure
) -> None:
    problems: list[str] = []
    for variant in _variants(kind, site):
        for payload_kind in PAYLOADS:
            outcome, found = _try(kind, site, payload_kind, variant)
            RESULTS[(kind, site, variant, payload_kind)] = outcome
            problems += [f"{variant}: {payload_kind}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    figure(
        "security",
        "shell and template syntax planted in a field that reaches a generated file",
        f"each of {len(PAYLOADS)} payloads refused at the field, or only quoted data "
        "in dvc.yaml, the workflows and the manifests",
    )


def test_the_base_compiles_to_yaml() -> None:
    """The unplanted spec's files, which the planted runs skip, load as YAML."""
    spec = specs.load(FULL)
    files = compiler.render(spec, Release(spec.registry["model"], "3", RUN_ID))
    assert {n.split("/")[0] for n in files} >= {".github", "argo", "deploy"}
    for text in files.values():
        assert yaml.load(text, Loader=LOADER) is not None  # noqa: S506


def test_the_scan_finds_what_it_looks_for() -> None:
    """Each rule of the scan fails on the mistake it is there for."""
    planted = "x" + PAYLOADS["shell"]
    site = ("storage", "remote", "url")
    unquoted = {
        ".github/workflows/w.yml": yaml.safe_dump(
            {"jobs": {"j": {"steps": [{"run": f"dvc remote add r {planted}"}]}}}
        )
    }
    quoted = {
        ".github/workflows/w.yml": yaml.safe_dump(
            {
                "jobs": {
                    "j": {
                        "steps": [{"run": f"dvc remote add r {shlex.quote(planted)}"}]
                    }
                }
            }
        )
    }
    argo = {
        "argo/t.yaml": yaml.safe_dump(
            {
                "container": {
                    "command": ["sh", "-c"],
                    "args": [f"echo {planted}"],
                    "image": "i",
                    "env": [{"value": PAYLOADS["template"]}],
                }
            }
        )
    }
    github = {
        ".github/workflows/w.yml": yaml.safe_dump(
            {"env": {"A": PAYLOADS["github-expression"]}}
        )
    }
    dvc = {
        "dvc.yaml": yaml.safe_dump(
            {"stages": {"s": {"deps": [PAYLOADS["github-expression"]]}}}
        )
    }
    assert list(_violations(unquoted, planted, "shell", site))
    assert not list(_violations(quoted, planted, "shell", site))
    assert len(list(_violations(argo, planted, "template", site))) == 2
    assert list(_violations(github, planted, "github-expression", site))
    assert list(_violations(dvc, planted, "github-expression", site))
    own = ("pipeline", "s", "run")
    mine = {"dvc.yaml": yaml.safe_dump({"stages": {"s": {"cmd": planted}}})}
    assert not list(_violations(mine, planted, "shell", own))
