"""The framework as a wheel: what it carries, and a team's repository using it.

The end-to-end test builds the wheel, installs it in a fresh venv that cannot
see this source tree, and runs a hand-written spec in a new git repository.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from runner import compile as compiler
from runner import framework as fw
from runner import spec as specs
from runner.builtins import BUILTINS
from runner.errors import SpecError
from runner.targets import github, pod, serving_pod
from tests.installed import Installed, copy_sources, installed_framework, make_venv
from tests.support import ROOT, admitted_pythons, missing

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"

# A tiny binary task: 80 rows, two features, a label any model learns.
ROWS = 80
SPEC = """\
version: 1
project:
  name: points
  task: classification
  target: label
  seed: 1
data:
  points:
    path: data/points.csv
pipeline:
  ingest:
    uses: ingest
    with: {source: points}
  preprocess:
    uses: preprocess
    needs: [ingest]
    with:
      split: {method: stratified, test_size: 0.25}
  train:
    uses: train
    needs: [preprocess]
    with:
      estimator: sklearn.linear_model.LogisticRegression
      params: {C: 1.0}
"""
# A team's own stages/ folder, as custom stage scripts often live in one: had
# DVC's command imported it instead of the framework's, train would fail.
SHADOW = "raise SystemExit(\"the team's stages/train.py ran, not the framework's\")\n"


@pytest.fixture(scope="module")
def framework(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return installed_framework(tmp_path_factory)


def _team_repo(root: Path, spec: str = SPEC) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "data").mkdir()
    lines = ["x1,x2,label"]
    for i in range(ROWS):
        a, b = (i * 37 % ROWS) / ROWS, (i * 11 % ROWS) / ROWS
        lines.append(f"{a:.4f},{b:.4f},{int(a + b > 1)}")
    (root / "data" / "points.csv").write_text("\n".join(lines) + "\n")
    (root / "mlops.yaml").write_text(spec)
    return root


def _params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())


# -- the wheel's contents ----------------------------------------------------


def test_setup_copies_the_files_the_framework_looks_up() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    (assign,) = [
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and n.targets[0].id == "PACKAGED_FILES"  # type: ignore[attr-defined]
    ]
    assert ast.literal_eval(assign.value) == fw.PACKAGED_FILES


def test_the_repository_holds_one_copy_of_each_packaged_file() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "runner/_data"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert tracked == ""
    assert not fw.PACKAGED_DIR.exists()
    # In a checkout (the dev venv's editable install), the repository's own.
    for name in fw.PACKAGED_FILES:
        assert fw.packaged_file(name) == ROOT / name


def test_wheel_carries_packaged_files_and_every_stage(framework: Installed) -> None:
    with zipfile.ZipFile(framework.wheel) as whl:
        names = set(whl.namelist())
        for name in fw.PACKAGED_FILES:
            assert whl.read(f"runner/_data/{name}") == (ROOT / name).read_bytes()
    for kind in BUILTINS:
        assert set(BUILTINS[kind].modules) <= names
    for package in ("stages/monitor", "stages/serving", "runner/targets"):
        assert f"{package}/__init__.py" in names


def test_the_wheel_requires_the_setuptools_deepchecks_imports(
    framework: Installed,
) -> None:
    # deepchecks imports pkg_resources and does not say so; setuptools 82
    # dropped it. The venv here sees the dev venv's setuptools, so the
    # requirement itself is what keeps a user's fresh venv working.
    with zipfile.ZipFile(framework.wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        lines = whl.read(meta).decode().splitlines()
    required = [
        Requirement(line.split(":", 1)[1])
        for line in lines
        if line.startswith("Requires-Dist:")
    ]
    setuptools = [r for r in required if r.name == "setuptools" and r.marker is None]
    assert len(setuptools) == 1, required
    assert "82.0" not in setuptools[0].specifier
    assert importlib.metadata.version("setuptools") in setuptools[0].specifier
    # The reason, while it holds: deepchecks' own module imports it.
    display = importlib.util.find_spec("deepchecks.utils.display")
    assert display is not None and display.origin is not None
    assert "import pkg_resources" in Path(display.origin).read_text()


def _pins() -> dict[str, str]:
    """constraints.txt as name -> version; every line an exact pin."""
    pins = {}
    for line in (ROOT / fw.CONSTRAINTS).read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            pin = Requirement(text)
            (spec,) = pin.specifier
            assert spec.operator == "==", f"{fw.CONSTRAINTS}: {line!r} is not a pin"
            pins[pin.name] = spec.version
    return pins


def test_every_pin_installs_on_every_python_the_project_admits() -> None:
    # "Python 3.11" is any patch release of it: Debian 12 ships 3.11.2.
    # soupsieve 3.0 and later want 3.11.5, and pinning one broke `make setup`
    # there. The venv holds the pinned tree, so its metadata is the index's.
    pythons = admitted_pythons()
    assert pythons, "pyproject's requires-python admits no release"
    refused = {}
    for name, version in _pins().items():
        dist = importlib.metadata.distribution(name)
        assert dist.version == version, f"{name}: the venv has {dist.version}"
        needs = dist.metadata.get("Requires-Python")
        if needs:
            left_out = [v for v in pythons if v not in SpecifierSet(needs)]
            if left_out:
                refused[f"{name}=={version}"] = (
                    f"Requires-Python {needs}, so not {left_out[0]}"
                )
    assert not refused, refused


def test_sdist_carries_what_the_wheel_is_built_from(tmp_path: Path) -> None:
    src = copy_sources(tmp_path / "src")
    build = "from setuptools import build_meta as b; print(b.build_sdist('dist'))"
    name = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True,
        check=True,
    ).stdout.split()[-1]  # fmt: skip
    with tarfile.open(src / "dist" / name) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {*fw.PACKAGED_FILES, "setup.py", "pyproject.toml"} <= names


def test_installed_framework_resolves_inside_its_venv(framework: Installed) -> None:
    site = framework.site_packages
    probe = (
        "import runner, stages, runner.schema as s, runner.framework as f\n"
        "print(runner.__file__); print(stages.__file__); print(s.SCHEMA_PATH)\n"
        "print(f.packaged_file(f.CONSTRAINTS)); print(f.stages_dir())\n"
    )
    out = framework.run("python", "-c", probe, cwd=site.parent).stdout.split()
    assert out == [
        str(site / "runner" / "__init__.py"),
        str(site / "stages" / "__init__.py"),
        str(site / "runner" / "_data" / fw.SCHEMA),
        str(site / "runner" / "_data" / fw.CONSTRAINTS),
        str(site / "stages"),
    ]


def test_version_is_the_distributions_without_mlflow(framework: Installed) -> None:
    assert framework.mlops("--version", cwd=framework.venv) == f"mlops {fw.version()}\n"
    probe = (
        "import sys\nfrom runner import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('mlflow', 'deepchecks', 'dvc') if m in sys.modules))"
    )
    out = framework.run("python", "-c", probe, cwd=framework.venv).stdout
    assert out.splitlines()[-1] == "[]"


# -- digests -----------------------------------------------------------------


def test_digest_is_deterministic_and_covers_path_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "a.py").write_text("x = 1\n")
    (tmp_path / "stages" / "b.py").write_text("y = 2\n")
    first = fw.digest(tmp_path, ["stages/b.py", "stages/a.py"])
    assert first == fw.digest(tmp_path, ["stages/a.py", "stages/b.py", "stages/a.py"])
    assert first != fw.digest(tmp_path, ["stages/a.py"])
    (tmp_path / "stages" / "b.py").write_text("y = 3\n")
    assert first != fw.digest(tmp_path, ["stages/b.py", "stages/a.py"])


def _stage_imports(rel: str) -> set[str]:
    """Modules of the stages package a file imports, as paths. Importing
    anything of the package runs its ``__init__.py`` (the allow-list rule,
    how a stage process ends): that is the stage's code too."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            found |= {f"stages/{alias.name}.py" for alias in node.names}
            found.add("stages/__init__.py")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "stages."
        ):
            found.add(f"{node.module.replace('.', '/')}.py")  # type: ignore[union-attr]
            found.add("stages/__init__.py")
    return {f for f in found if (ROOT / f).is_file()}


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_digest_covers_every_module_a_stage_imports(kind: str) -> None:
    # Transitively: a stage runs the code of what its imports import, too.
    seen: set[str] = set()
    todo = [BUILTINS[kind].module]
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo.extend(_stage_imports(rel))
    assert seen == set(BUILTINS[kind].modules)


def test_template_mode_needs_every_builtin_module(tmp_path: Path) -> None:
    assert fw.is_template(ROOT)
    assert not fw.is_template(tmp_path)
    for kind in BUILTINS:
        for rel in BUILTINS[kind].modules:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("")
    assert fw.is_template(tmp_path)
    (tmp_path / BUILTINS["train"].module).unlink()
    assert not fw.is_template(tmp_path)


# -- ci.install --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["mlops-gitops>=0.1", "mlops-gitops", "git+https://github.com/acme/mlops-gitops@main",
     "git+https://github.com/acme/mlops-gitops@0123abc", "other==1.0.0"],
)  # fmt: skip
def test_unpinned_install_is_refused(value: str) -> None:
    text = SPEC + f"ci:\n  install: {value!r}\n"
    with pytest.raises(SpecError) as caught:
        specs.parse(text, "mlops.yaml")
    assert caught.value.lines() == [
        f"mlops.yaml:26:12: ci -> install: {value!r} is not a pinned framework: "
        "`mlops-gitops==X.Y.Z`, or `git+https://<repository>@<40-hex commit>`"
    ]


def test_pinned_install_reaches_ci_and_the_image(tmp_path: Path) -> None:
    pin = (
        "git+https://github.com/acme/mlops-gitops@"
        + "0123456789abcdef" * 2
        + "01234567"
    )
    spec = specs.parse(SPEC + f"ci:\n  install: {pin}\n")
    files = compiler.render(spec, framework=compiler.framework_for(spec, tmp_path))
    assert files[fw.REQUIREMENTS_FILE].splitlines()[-1] == pin
    packaged = fw.packaged_file(fw.CONSTRAINTS).read_text()
    assert files[fw.CONSTRAINTS_FILE].endswith(packaged)
    dockerfile = files[fw.DOCKERFILE_FILE]
    assert f"-c {fw.CONSTRAINTS_FILE} -r {fw.REQUIREMENTS_FILE}" in dockerfile
    assert "USER 10001:10001" in dockerfile
    for name in (github.PULL_REQUEST_FILE, github.MAIN_FILE, github.MONITOR_FILE):
        workflow = files[name]
        assert github.INSTALL_FRAMEWORK in workflow
        assert github.INSTALL not in workflow
    # The default: this very version of the framework.
    spec = specs.parse(SPEC)
    files = compiler.render(spec, framework=compiler.framework_for(spec, tmp_path))
    assert files[fw.REQUIREMENTS_FILE].splitlines()[-1] == (
        f"mlops-gitops=={fw.version()}"
    )


COMMIT = "0123456789abcdef" * 2 + "01234567"


@pytest.mark.parametrize(
    ("direct_url", "pin"),
    [
        # PEP 610's record of `pip install git+https://...@main`: the commit.
        ({"url": "https://github.com/acme/mlops-gitops.git",
          "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"}},
         f"git+https://github.com/acme/mlops-gitops.git@{COMMIT}"),
        # Credentials in the URL must never reach a committed file.
        ({"url": "https://bot:token@github.com/acme/mlops-gitops",
          "vcs_info": {"vcs": "git", "commit_id": COMMIT}}, None),
        # A clone on this machine, a wheel, a folder: nothing CI can reach.
        ({"url": "file:///home/me/mlops-gitops",
          "vcs_info": {"vcs": "git", "commit_id": COMMIT}}, None),
        ({"url": "https://example.org/mlops_gitops-0.1.0-py3-none-any.whl",
          "archive_info": {}}, None),
        ({"url": "file:///home/me/mlops-gitops", "dir_info": {"editable": True}},
         None),
        ({"url": "https://hg.example.org/mlops", "vcs_info": {"vcs": "hg",
          "commit_id": COMMIT}}, None),
        ({"url": "https://github.com/acme/mlops-gitops",
          "vcs_info": {"vcs": "git", "commit_id": "main"}}, None),
        ("not json", None),
        (None, None),
    ],
)  # fmt: skip
def test_a_framework_installed_from_git_pins_its_commit(
    direct_url: Any, pin: str | None
) -> None:
    text = json.dumps(direct_url) if isinstance(direct_url, dict) else direct_url
    assert fw.git_pin(text) == pin
    if pin is not None:  # what compile then writes, and validate accepts
        spec = specs.parse(SPEC + f"ci:\n  install: {pin}\n")
        assert spec.ci["install"] == pin
    assert fw.requirement(None, "1.2.3", pin) == (pin or "mlops-gitops==1.2.3")
    assert fw.requirement("mlops-gitops==9.9.9", "1.2.3", pin) == "mlops-gitops==9.9.9"


def test_template_mode_ignores_install_and_keeps_todays_files(tmp_path: Path) -> None:
    spec = specs.parse(SPEC + "ci:\n  install: mlops-gitops==9.9.9\n")
    files = compiler.render(spec, framework=compiler.framework_for(spec, ROOT))
    assert files == compiler.render(spec)
    assert not {fw.REQUIREMENTS_FILE, fw.CONSTRAINTS_FILE, fw.DOCKERFILE_FILE} & set(
        files
    )
    stages = yaml.safe_load(files["dvc.yaml"])["stages"]
    assert stages["train"]["cmd"] == "python -m stages.train train"
    assert set(BUILTINS["train"].modules) <= set(stages["train"]["deps"])
    assert fw.PARAMS_KEY not in yaml.safe_load(files["params.yaml"])


# -- the team image ----------------------------------------------------------


def test_team_dockerfile_installs_the_pin_and_runs_as_the_pods_user() -> None:
    text = (ROOT / fw.TEAM_DOCKERFILE).read_text()
    assert f"COPY {fw.REQUIREMENTS_FILE} {fw.CONSTRAINTS_FILE} ./" in text
    assert f"-c {fw.CONSTRAINTS_FILE} -r {fw.REQUIREMENTS_FILE}" in text
    # The repository is copied where serving pods read the spec.
    copy_at = text.index("COPY . ./")
    workdir = re.findall(r"^WORKDIR (\S+)", text[:copy_at], re.M)[-1]
    assert f"{workdir}/mlops.yaml" == serving_pod.SPEC_IN_IMAGE
    assert f"USER {pod.UID}:{pod.UID}" in text
    assert f"--uid {pod.UID}" in text
    assert "-e ." not in text  # the framework from its pin, not a checkout


def test_checkov_finds_no_more_in_the_team_image_than_in_ours() -> None:
    if not CHECKOV.exists():
        missing(f"checkov is absent: run `make {CHECKOV.relative_to(ROOT)}`")

    def failed(name: str) -> list[str]:
        proc = subprocess.run(
            [CHECKOV, "-f", ROOT / name, "--framework", "dockerfile", "--compact",
             "--quiet", "-o", "json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        report = json.loads(proc.stdout)
        return sorted(c["check_id"] for c in report["results"]["failed_checks"])

    # Both only lack a HEALTHCHECK: the image runs Argo tasks as well as the
    # server, and Kubernetes probes the server itself.
    assert failed(fw.TEAM_DOCKERFILE) == failed("Dockerfile") == ["CKV_DOCKER_2"]


# -- a team's repository, end to end through the wheel ----------------------


def test_team_repository_runs_the_installed_framework(
    framework: Installed, tmp_path: Path
) -> None:
    repo = _team_repo(tmp_path / "team")
    (repo / "stages").mkdir()
    (repo / "stages" / "__init__.py").write_text("")
    (repo / "stages" / "train.py").write_text(SHADOW)

    assert framework.mlops("--version", cwd=repo) == f"mlops {fw.version()}\n"
    assert framework.mlops("validate", cwd=repo) == "mlops.yaml: valid (3 stages)\n"
    out = framework.mlops("run", cwd=repo)
    assert "3 stages, 3 ran" in out, out

    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name in ("ingest", "preprocess", "train"):
        assert dvc[name]["cmd"] == f"mlops stage {name} {name}"
        assert f"framework.digests.{name}" in dvc[name]["params"]
        assert all((repo / dep).exists() for dep in dvc[name]["deps"])
    params = _params(repo)[fw.PARAMS_KEY]
    site = framework.site_packages
    assert params == {
        "version": fw.version(),
        "digests": {
            k: fw.digest(site, BUILTINS[k].modules)
            for k in ("ingest", "preprocess", "train")
        },
    }
    assert (
        (repo / fw.REQUIREMENTS_FILE)
        .read_text()
        .endswith(f"\nmlops-gitops=={fw.version()}\n")
    )

    out = framework.mlops("run", cwd=repo)
    assert "3 stages, 0 ran, 3 unchanged" in out, out
    # A release command runs its module from the installed package too.
    assert framework.mlops("history", cwd=repo) == (
        "no promotions of points recorded yet\n"
    )

    spec = (repo / "mlops.yaml").read_text()
    (repo / "mlops.yaml").write_text(spec.replace("{C: 1.0}", "{C: 0.5}"))
    out = framework.mlops("plan", cwd=repo)
    assert "1 of 3 stages would run:" in out, out
    assert "unchanged: ingest, preprocess" in out, out
    (repo / "mlops.yaml").write_text(spec)
    assert "0 of 3 stages would run:" in framework.mlops("plan", cwd=repo)

    # An upgrade that changes train's own module, in a venv of its own. The
    # plan is DVC's own status, what `mlops run` would act on; running train
    # again would add half a minute and prove nothing more.
    upgraded = make_venv(tmp_path / "upgraded", framework.wheel)
    module = upgraded.site_packages / BUILTINS["train"].module
    module.write_text(module.read_text() + "# the next release\n")
    out = upgraded.mlops("plan", cwd=repo)
    assert "1 of 3 stages would run:" in out, out
    assert "train" in out.split("would run:")[1].split("unchanged")[0]
    assert "unchanged: ingest, preprocess" in out, out
    after = _params(repo)[fw.PARAMS_KEY]["digests"]
    assert after["train"] != params["digests"]["train"]
    assert {k: after[k] for k in ("ingest", "preprocess")} == {
        k: params["digests"][k] for k in ("ingest", "preprocess")
    }


def test_same_spec_in_template_mode_keeps_module_deps(
    framework: Installed, tmp_path: Path
) -> None:
    repo = _team_repo(tmp_path / "template")
    subprocess.run(
        ["cp", "-r", str(ROOT / "stages"), str(repo / "stages")], check=True
    )  # fmt: skip
    framework.mlops("compile", cwd=repo)
    expected = compiler.render(specs.parse(SPEC))
    for rel in ("dvc.yaml", "params.yaml"):
        assert (repo / rel).read_text() == expected[rel]
    assert not (repo / fw.REQUIREMENTS_FILE).exists()
