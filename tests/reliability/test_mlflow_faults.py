"""A failing MLflow server never turns into a pass (issue 12, item 8).

One real ``mlflow server`` and one trained model serve the whole module; the
stages run in-process against a proxy that refuses (403), fails (500), loses
answers or finds the server stopped. Each test checks, behind the proxy's back,
that the registry holds what it should: no ``max_drop`` gate passed on a
refused look-up, no second version of one run, ``@production`` where it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages import audit, common, evaluate, promote, register, rollback, tracking
from tests.reliability.conftest import DROP, FAIL, FORBIDDEN, LOST, Proxy, Server
from tests.stages.conftest import QUIET_ENV, build_params, run_stage
from tests.support import quiet_env

MODEL = "faults"
# Well under the ~4 minutes MLflow's own retries take against a 500.
BOUND_SECONDS = 30
API = "/api/2.0/mlflow/"
ALIAS = API + r"registered-models/alias\b"
CREATE = API + "model-versions/create"
SEARCH = API + "model-versions/search"
GET_MODEL = API + r"registered-models/get\b"
SET_MODEL_TAG = API + r"registered-models/set-tag\b"
RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


def _params() -> dict[str, Any]:
    return build_params(
        [
            ("ingest", "ingest", {"source": "src"}),
            (
                "preprocess",
                "preprocess",
                {"split": {"method": "stratified", "test_size": 0.25}},
            ),
            (
                "train",
                "train",
                {
                    "estimator": "sklearn.ensemble.RandomForestClassifier",
                    "params": {"n_estimators": 10, "max_depth": 3},
                },
            ),
            ("evaluate", "evaluate", {"metrics": ["accuracy", "f1"]}),
            ("register", "register", {}),
        ],
        data={"src": {"sklearn": "breast_cancer"}},
        gates=[{"metric": "accuracy", "min": 0.8}, {"metric": "f1", "max_drop": 0.05}],
        name=MODEL,
    )


@pytest.fixture(scope="module")
def world(
    mlflow_behind_proxy: tuple[Server, Proxy], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Proxy, Path]]:
    """The project trained and registered once through the proxy; v1 serves."""
    server, proxy = mlflow_behind_proxy
    root = tmp_path_factory.mktemp("faults")
    (root / "params.yaml").write_text(yaml.safe_dump(_params(), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in QUIET_ENV.items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_TRACKING_URI", proxy.url)
        mp.setenv("GITHUB_ACTOR", "reliability")
        _no_client_settings(mp)  # what bound_client sets goes when the module ends
        mp.chdir(root)
        for kind in ("ingest", "preprocess"):  # no MLflow yet: while it starts
            assert run_stage(kind) == 0, kind
        server.wait_up()
        for kind in ("train", "evaluate", "register"):
            assert run_stage(kind) == 0, kind
        _direct(server).set_registered_model_alias(MODEL, "production", "1")
        yield server, proxy, root


@pytest.fixture(autouse=True)
def _fresh(world: tuple[Server, Proxy, Path], monkeypatch: pytest.MonkeyPatch):
    """No fault left from another test; one retry, so faults fail in seconds.

    The user's own setting wins over tracking.CLIENT_DEFAULTS: this is that path.
    The tests of the defaults themselves take this setting away again.
    """
    _, proxy, root = world
    proxy.clear()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    monkeypatch.chdir(root)
    _no_client_settings(monkeypatch)
    monkeypatch.setenv(RETRIES, "1")
    yield
    world[1].clear()


def _direct(server: Server) -> Any:
    """A client that goes to the server itself, not through the proxy."""
    import mlflow

    return mlflow.MlflowClient(server.url)


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.monotonic()
    code = fn()
    return code, time.monotonic() - start


def _production(server: Server) -> str:
    return str(_direct(server).get_model_version_by_alias(MODEL, "production").version)


def _versions_of(server: Server, run_id: str) -> list[Any]:
    return [
        v
        for v in _direct(server).search_model_versions(f"name='{MODEL}'")
        if v.tags.get(register.TAG_RUN_ID) == run_id
    ]


def _entries(server: Server) -> list[dict[str, Any]]:
    return audit.read_entries(_direct(server).get_registered_model(MODEL).tags)


def _read(root: Path, rel: str) -> Any:
    return json.loads((root / rel).read_text())


def _new_candidate(root: Path, *, register_it: bool = True) -> str:
    """Train a new run (and register it): a version that may be promoted."""
    kinds = ["train", "evaluate"] + (["register"] if register_it else [])
    for kind in kinds:
        assert run_stage(kind) == 0, kind
    return str(_read(root, "artifacts/train/run.json")["run_id"])


def _candidate(server: Server, root: Path) -> str:
    """A registered version other than 1 that passed its gates; an earlier
    test's if it left one (training another takes a while)."""
    path = root / "artifacts/register/registered.json"
    if path.is_file():
        record = json.loads(path.read_text())
        version = str(record["version"])
        tags = _direct(server).get_model_version(MODEL, version).tags
        if (
            version != "1"
            and record["gates_passed"]
            and tags.get(register.TAG_RUN_ID) == record["run_id"]
        ):
            return version
    _new_candidate(root)
    return str(_read(root, "artifacts/register/registered.json")["version"])


def _promotable(server: Server, root: Path) -> tuple[str, int]:
    """A candidate to promote over version 1 @production, and the audit's length."""
    candidate = _candidate(server, root)
    _direct(server).set_registered_model_alias(MODEL, "production", "1")
    return candidate, len(_entries(server))


def _assert_names(err: str, proxy: Proxy, *parts: str) -> None:
    """The error line names the server, the call, MLflow's code and what to do."""
    assert f"the MLflow server at {proxy.url} failed" in err, err
    for part in parts:
        assert part in err, (part, err)


def _no_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracking.CLIENT_DEFAULTS:
        monkeypatch.setenv(name, "unset-me")
        monkeypatch.delenv(name)


def test_client_defaults_bound_retries_and_the_users_own_values_win() -> None:
    env = {RETRIES: "9"}
    tracking.bound_client(env)
    assert env[RETRIES] == "9"
    assert {k: v for k, v in env.items() if k != RETRIES} == {
        k: v for k, v in tracking.CLIENT_DEFAULTS.items() if k != RETRIES
    }
    # MLflow reads exactly these names, and would retry 7 times otherwise.
    from mlflow import environment_variables as mlflow_env

    for name in tracking.CLIENT_DEFAULTS:
        assert getattr(mlflow_env, name).name == name
    assert mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.default == 7


def test_a_refused_production_lookup_passes_no_max_drop_gate(
    world, capsys, figure
) -> None:
    server, proxy, root = world
    _direct(server).set_registered_model_alias(MODEL, "production", "1")
    gates_file = root / "artifacts/evaluate/gates.json"
    gates_file.unlink()
    refused = proxy.fault("GET", ALIAS, FORBIDDEN)
    code, seconds = _timed(lambda: run_stage("evaluate"))
    out, err = capsys.readouterr()
    assert code == 1 and seconds < BOUND_SECONDS
    assert refused.hits >= 1, (err, proxy.seen)
    assert not gates_file.exists(), "no verdict may be written on a refused look-up"
    assert evaluate.NO_PRODUCTION not in out + err
    _assert_names(
        err, proxy, "get_model_version_by_alias('faults', 'production')",
        "PERMISSION_DENIED", "MLFLOW_TRACKING_TOKEN",
    )  # fmt: skip

    # Recovered: the same stage compares with production, as it should have.
    proxy.clear()
    assert run_stage("evaluate") == 0
    drop = _read(root, "artifacts/evaluate/gates.json")["gates"][-1]
    assert drop["rule"] == "max_drop" and "production_value" in drop, drop
    assert drop["detail"] != evaluate.NO_PRODUCTION
    figure(
        "fault",
        "the registry refuses (403) the production look-up during evaluate",
        "exit 1 naming the call; no max_drop verdict; after recovery the gate compares",
        seconds=round(seconds, 1),
    )


def test_a_failing_server_fails_evaluate_within_the_bound(
    world, capsys, monkeypatch, figure
) -> None:
    """MLflow's defaults would retry for about 4 minutes; ours give up in seconds."""
    _, proxy, root = world
    _no_client_settings(monkeypatch)
    proxy.fault(None, "", FAIL)
    metrics_file = root / "artifacts/evaluate/metrics.json"
    before = metrics_file.read_bytes()
    code, seconds = _timed(lambda: run_stage("evaluate"))
    err = capsys.readouterr().err
    assert code == 1 and seconds < BOUND_SECONDS, seconds
    retries = int(tracking.CLIENT_DEFAULTS[RETRIES])
    assert proxy.count("GET", API + "experiments/get-by-name") == 1 + retries
    assert metrics_file.read_bytes() == before
    _assert_names(err, proxy, "INTERNAL_ERROR", f"gave up after {retries} retries")
    figure(
        "fault",
        "the whole MLflow server answers 500 during evaluate",
        f"exit 1 after {retries} retries (MLflow's own: about 4 minutes); metrics unchanged",
        seconds=round(seconds, 1),
    )


def test_mlops_history_against_a_failing_server_fails_within_the_bound(
    world, figure
) -> None:
    """The CLI, in a fresh process with none of the client's variables set."""
    _, proxy, root = world
    proxy.fault(None, "", FAIL)
    env = {k: v for k, v in quiet_env().items() if k not in tracking.CLIENT_DEFAULTS}
    env["MLFLOW_TRACKING_URI"] = proxy.url
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "history"], cwd=root, env=env,
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert proc.returncode == 1 and seconds < BOUND_SECONDS, (seconds, proc.stderr)
    assert "no promotions" not in proc.stdout
    assert proxy.count("GET", GET_MODEL) == 1 + int(tracking.CLIENT_DEFAULTS[RETRIES])
    _assert_names(proc.stderr, proxy, "get_registered_model('faults')", "/health")
    figure(
        "fault",
        "`mlops history` against a server answering 500",
        "exit 1 naming the call, never 'no promotions'",
        seconds=round(seconds, 1),
    )


def test_history_refused_is_an_error_not_no_promotions(world, capsys, figure) -> None:
    _, proxy, _ = world
    proxy.fault("GET", GET_MODEL, FORBIDDEN)
    for args in ([], ["--all", "--json"], ["--at", "2030-01-01"]):
        code, seconds = _timed(lambda a=args: audit.main(a))
        out, err = capsys.readouterr()
        assert code == 1 and seconds < BOUND_SECONDS
        assert out == "" and "no promotions" not in err and "had been" not in err
        _assert_names(err, proxy, "get_registered_model('faults')", "PERMISSION_DENIED")
    proxy.clear()
    assert audit.main([]) == 0
    figure(
        "fault",
        "`mlops history` refused (403), three ways of asking",
        "exit 1 naming the call, never 'no promotions'; answers after recovery",
        seconds=round(seconds, 1),
    )


def test_a_lost_answer_to_create_leaves_one_version_after_the_retry(
    world, capsys, figure
) -> None:
    server, proxy, root = world
    run_id = _new_candidate(root, register_it=False)
    registered = root / "artifacts/register/registered.json"
    registered.unlink()
    lost = proxy.fault("POST", CREATE, LOST)
    code, seconds = _timed(lambda: run_stage("register"))
    assert code == 1 and seconds < BOUND_SECONDS
    # The client retried a create the server had done: two copies of one run.
    copies = _versions_of(server, run_id)
    assert lost.hits == 2 and len(copies) == 2
    assert all(
        not _direct(server).get_model_version(MODEL, v.version).aliases for v in copies
    )
    assert not registered.exists()
    assert "model-versions/create" in capsys.readouterr().err

    proxy.clear()
    assert run_stage("register") == 0
    (kept,) = _versions_of(server, run_id)
    assert str(kept.version) == str(min(int(v.version) for v in copies))
    assert kept.tags[register.TAG_GATES] == "true"
    candidate = _direct(server).get_model_version_by_alias(MODEL, "candidate")
    assert candidate.version == kept.version
    record = _read(root, "artifacts/register/registered.json")
    assert record["version"] == str(kept.version) and record["reused_existing_version"]
    assert "left by a retried request" in capsys.readouterr().err

    # Once more: the same version, nothing new.
    assert run_stage("register") == 0
    assert [v.version for v in _versions_of(server, run_id)] == [kept.version]
    figure(
        "fault",
        "the answer to create-version lost, after the server created it",
        "exit 1; the retry keeps one version and adds none; no alias on the extra copy",
        seconds=round(seconds, 1),
    )


def test_a_refused_version_search_registers_nothing(world, capsys, figure) -> None:
    """Reading a refused search as "none yet" would register the run twice."""
    server, proxy, root = world
    run_id = str(_read(root, "artifacts/train/run.json")["run_id"])
    assert run_stage("register") == 0
    before = [v.version for v in _versions_of(server, run_id)]
    assert len(before) == 1
    proxy.fault("GET", SEARCH, FORBIDDEN)
    code, seconds = _timed(lambda: run_stage("register"))
    assert code == 1 and seconds < BOUND_SECONDS
    assert proxy.count("POST", CREATE) == 0
    assert [v.version for v in _versions_of(server, run_id)] == before
    _assert_names(
        capsys.readouterr().err, proxy, "search_model_versions(\"name='faults'\")",
        "PERMISSION_DENIED",
    )  # fmt: skip
    figure(
        "fault",
        "the version search refused (403) during register",
        "exit 1 naming the call; no version created",
        seconds=round(seconds, 1),
    )


def test_a_failed_promote_leaves_production_and_a_retry_is_idempotent(
    world, capsys, figure
) -> None:
    server, proxy, root = world
    candidate, entries = _promotable(server, root)

    # Refused look-up of the current production: nothing moves, nothing recorded.
    proxy.fault("GET", ALIAS, FORBIDDEN)
    code, seconds = _timed(lambda: promote.main([]))
    assert code == 1 and seconds < BOUND_SECONDS
    assert _production(server) == "1" and len(_entries(server)) == entries
    _assert_names(capsys.readouterr().err, proxy, "get_model_version_by_alias")

    # The move itself fails (500, retried, then given up): production stays.
    proxy.clear()
    failed = proxy.fault("POST", ALIAS, FAIL)
    code, seconds = _timed(lambda: promote.main([]))
    err = capsys.readouterr().err
    assert code == 1 and seconds < BOUND_SECONDS and failed.hits == 2
    assert _production(server) == "1" and len(_entries(server)) == entries
    assert "@production names version 1, as before" in err
    _assert_names(err, proxy, "set_registered_model_alias('faults', 'production')")

    # The server moves it but the answer is lost: read back, recorded once.
    proxy.clear()
    proxy.fault("POST", ALIAS, LOST)
    assert promote.main([]) == 0
    assert _production(server) == candidate
    assert "it moved" in capsys.readouterr().err
    after = _entries(server)
    assert len(after) == entries + 1
    assert after[-1]["outcome"] == audit.PROMOTED
    assert after[-1]["version"] == candidate and after[-1]["previous"] == "1"

    # Recovered: promoting again changes nothing.
    proxy.clear()
    assert promote.main([]) == 0
    assert "nothing to promote" in capsys.readouterr().out
    assert _production(server) == candidate and len(_entries(server)) == entries + 1
    figure(
        "fault",
        "promote: the look-up refused, the alias move failing (500), its answer lost",
        "@production unchanged until the move lands; one audit entry; a retry changes nothing",
        seconds=round(seconds, 1),
    )


def test_a_promotion_whose_audit_entry_is_not_saved_is_undone(
    world, capsys, figure
) -> None:
    """No promotion without its record: the alias goes back, and a retry is safe."""
    server, proxy, root = world
    candidate, entries = _promotable(server, root)

    failed = proxy.fault("POST", SET_MODEL_TAG, FAIL)
    code, seconds = _timed(lambda: promote.main([]))
    out, err = capsys.readouterr()
    assert code == 1 and seconds < BOUND_SECONDS and failed.hits == 2
    assert proxy.count("POST", ALIAS) == 2  # moved, then moved back
    assert _production(server) == "1" and len(_entries(server)) == entries
    assert "@production was moved back to version 1: nothing changed" in err
    assert "promoted" not in out
    _assert_names(err, proxy, "set_registered_model_tag('faults', 'mlops.audit.")

    # The registry stores the entry but the answers are lost: read back, kept.
    proxy.clear()
    lost = proxy.fault("POST", SET_MODEL_TAG, LOST)
    assert promote.main([]) == 0
    assert lost.hits == 2 and _production(server) == candidate
    assert "the registry holds the entry: it was saved" in capsys.readouterr().err
    after = _entries(server)
    assert len(after) == entries + 1 and after[-1]["version"] == candidate
    figure(
        "fault",
        "promote: the audit entry refused (500) after the alias moved; its answer lost",
        "@production moved back, exit 1, a retry promotes once; a lost answer is "
        "read back, one entry",
        seconds=round(seconds, 1),
    )


def test_a_refused_onnx_download_fails_serve_instead_of_falling_back(
    world, capsys, figure, tmp_path
) -> None:
    """A verified ONNX file the store refuses is a fault; only one the store says
    is not there makes `mlops serve` use the scikit-learn model."""
    import mlflow

    from stages.serving import fetch

    server, proxy, root = world
    _direct(server).set_registered_model_alias(MODEL, "production", "1")
    tags = _direct(server).get_model_version(MODEL, "1").tags
    assert tags.get(register.TAG_ONNX) == "verified", tags
    params = yaml.safe_load((root / "params.yaml").read_text())
    mlflow.set_tracking_uri(proxy.url)
    refused = proxy.fault(
        "GET", r"/mlflow-artifacts/artifacts/.*/onnx/model\.onnx", FORBIDDEN
    )
    start = time.monotonic()
    with pytest.raises(common.StageError, match="403 Client Error") as error:
        fetch.prepare(params, "1", cache=tmp_path / "refused")
    seconds = time.monotonic() - start
    assert refused.hits >= 1 and seconds < BOUND_SECONDS
    assert "download_artifacts('mlflow-artifacts:/" in str(error.value)
    assert "/onnx')" in str(error.value)

    proxy.clear()
    served, _ = fetch.prepare(params, "1", cache=tmp_path / "answered")
    assert served["onnx"] is not None, served["onnx_status"]
    figure(
        "fault",
        "`mlops serve`: the verified ONNX file's download refused (403)",
        "a failure naming the call, not a silent fall-back to scikit-learn",
        seconds=round(seconds, 1),
    )


def test_a_dropped_connection_is_a_failure_not_an_absence(
    world, capsys, figure
) -> None:
    """Every connection to the alias look-up dropped: evaluate fails, no verdict."""
    _, proxy, root = world
    gates_file = root / "artifacts/evaluate/gates.json"
    before = gates_file.read_bytes()
    dropped = proxy.fault("GET", ALIAS, DROP)
    code, seconds = _timed(lambda: run_stage("evaluate"))
    assert code == 1 and seconds < BOUND_SECONDS and dropped.hits == 2
    assert gates_file.read_bytes() == before
    _assert_names(capsys.readouterr().err, proxy, "get_model_version_by_alias")
    figure(
        "fault",
        "every connection to the alias look-up dropped",
        "evaluate exits 1; the gates file is unchanged",
        seconds=round(seconds, 1),
    )


def test_release_and_serve_read_a_refused_lookup_as_a_failure(
    world, capsys, figure
) -> None:
    """`mlops release` and `mlops serve` ask the same registry: no "none" on a 403."""
    from stages import production
    from stages.serving import fetch

    server, proxy, root = world
    _direct(server).set_registered_model_alias(MODEL, "production", "1")
    proxy.fault("GET", ALIAS, FORBIDDEN)
    assert production.main([]) == 1
    out, err = capsys.readouterr()
    assert "null" not in out
    _assert_names(err, proxy, "get_model_version_by_alias", "PERMISSION_DENIED")

    import mlflow

    params = yaml.safe_load((root / "params.yaml").read_text())
    mlflow.set_tracking_uri(proxy.url)
    with pytest.raises(common.StageError, match="PERMISSION_DENIED"):
        fetch.resolve(mlflow.MlflowClient(), params, None)
    proxy.clear()
    proxy.fault("GET", API + "model-versions/get\\b", FORBIDDEN)
    with pytest.raises(common.StageError, match="PERMISSION_DENIED") as refused:
        fetch.resolve(mlflow.MlflowClient(), params, "1")
    assert "has no version" not in str(refused.value)
    figure(
        "fault",
        "`mlops release` and `mlops serve` refused (403) the production look-up",
        "a failure naming the call, never 'no production model'",
    )


def test_no_password_of_the_tracking_uri_in_the_error(
    world, capsys, monkeypatch, figure
) -> None:
    """MLflow repeats the URL, credentials included, in a dropped call's error."""
    from stages import production

    _, proxy, _ = world
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", proxy.url.replace("://", "://team:s3cret-value@")
    )
    proxy.fault("GET", ALIAS, DROP)
    assert production.main([]) == 1
    out, err = capsys.readouterr()
    assert "s3cret-value" not in out + err and "team@" not in err
    _assert_names(err, proxy, "get_model_version_by_alias", "INTERNAL_ERROR")
    figure(
        "security",
        "a tracking URI carrying a password, in a dropped call's error",
        "the password appears in no output",
    )


def test_a_failed_rollback_leaves_production(world, capsys, figure) -> None:
    server, proxy, _ = world
    client = _direct(server)
    newest = max(
        int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")
    )
    client.set_registered_model_alias(MODEL, "production", str(newest))
    entries = len(_entries(server))
    failed = proxy.fault("POST", ALIAS, FAIL)
    code, seconds = _timed(lambda: rollback.main(["--to", "1"]))
    assert code == 1 and seconds < BOUND_SECONDS and failed.hits == 2
    assert _production(server) == str(newest) and len(_entries(server)) == entries
    err = capsys.readouterr().err
    assert f"@production names version {newest}, as before" in err
    proxy.clear()
    assert rollback.main(["--to", "1"]) == 0
    assert _production(server) == "1"
    assert _entries(server)[-1]["outcome"] == audit.ROLLED_BACK
    figure(
        "fault",
        "rollback's alias move failing (500)",
        "@production unchanged, no audit entry; the rollback works after recovery",
        seconds=round(seconds, 1),
    )


def test_the_server_stopped_mid_register_fails_loudly(world, capsys, figure) -> None:
    """Last, since it leaves the server down: starting one takes most of a minute
    on a busy machine. What it did store is read from its database directly."""
    import mlflow

    server, proxy, root = world
    run_id = _new_candidate(root, register_it=False)
    registered = root / "artifacts/register/registered.json"
    registered.unlink()
    # The server dies as the version is about to be created.
    proxy.fault("POST", CREATE, "", hook=server.kill)
    code, seconds = _timed(lambda: run_stage("register"))
    err = capsys.readouterr().err
    assert server.proc is not None and server.proc.poll() is not None
    assert code == 1 and seconds < BOUND_SECONDS
    assert not registered.exists()
    _assert_names(err, proxy, "model-versions/create", "/health")
    store = mlflow.MlflowClient(f"sqlite:///{server.store / 'mlflow.db'}")
    versions = store.search_model_versions(f"name='{MODEL}'")
    assert versions and not [
        v for v in versions if v.tags.get(register.TAG_RUN_ID) == run_id
    ]
    figure(
        "fault",
        "the MLflow server killed as the version is created",
        "exit 1 naming /health; no version of the run stored; registered.json not written",
        seconds=round(seconds, 1),
    )
