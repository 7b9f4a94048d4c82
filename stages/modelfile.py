"""The one gate a model directory passes before any command loads it, and the
canonical bytes train writes.

A model is an MLflow model directory holding a scikit-learn pipeline saved
with skops. :func:`check` refuses, with a :class:`~stages.common.StageError`
naming the directory, the file and what was expected:

- an ``MLmodel`` whose flavors point at another loader (``python_function``
  not loaded by ``mlflow.sklearn``, no ``sklearn`` flavor or another one, a
  format other than skops, ``code`` paths, or any field MLflow's loaders would
  act on that ``mlflow.sklearn`` does not write);
- a path escaping the directory: the skops file, the environment files, the
  input examples, or any file of the directory that is a symlink resolving
  outside it;
- a skops file holding a type outside the project's allow-list, or a function
  skops would call while loading (see :func:`check_types`).

:func:`load` is the check followed by ``skops.io.loads`` of the very bytes
checked. evaluate, register, monitor, deploy and ``mlops serve`` (its workers
through :func:`load_bytes`) all load through here.

:func:`canonical_skops` rewrites a skops archive so that the same pipeline
always gives the same bytes: skops stamps each zip entry with the time, and
names objects by ``id()`` or ``uuid4``, and numpy saves the padding bytes of
structured arrays as it finds them in memory; here entries get a fixed time,
the ids are renumbered in order of first appearance and padding is zeroed.
:data:`IDENTITY_FIELDS` are the MLmodel fields that say which run and when:
train keeps them out of the DVC-tracked copy (``run.json`` has the run).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from stages import allowed_prefixes, common, in_modules

MLMODEL = "MLmodel"
SKLEARN_FLAVOR = "sklearn"
PYFUNC_FLAVOR = "python_function"
SKLEARN_LOADER = "mlflow.sklearn"
SKOPS = "skops"
PREDICT_FN = "predict"
# What mlflow.sklearn writes in each flavor; any other key is something a
# loader might act on (``data``, ``code``, another ``loader_module``...).
PYFUNC_KEYS = frozenset(
    {"loader_module", "model_path", "predict_fn", "env", "python_version", "code"}
)
SKLEARN_KEYS = frozenset(
    {"pickled_model", "serialization_format", "sklearn_version"}
    | {"skops_trusted_types", "code"}
)
ENV_KEYS = frozenset({"conda", "virtualenv"})
EXAMPLE_PATHS = ("artifact_path", "serving_input_path")
# Top-level fields MLflow 3 writes (mlflow.models.Model.to_dict).
TOP_KEYS = frozenset(
    {
        "artifact_path",
        "auth_policy",
        "databricks_runtime",
        "env_vars",
        "flavors",
        "is_signature_from_type_hint",
        "metadata",
        "mlflow_version",
        "model_id",
        "model_size_bytes",
        "model_uuid",
        "prompts",
        "resources",
        "run_id",
        "saved_input_example_info",
        "signature",
        "type_hint_from_example",
        "utc_time_created",
    }
)
# Which run logged the model, where its artifacts were stored, and when: not
# kept in the DVC-tracked copy, so the same pipeline gives the same bytes.
IDENTITY_FIELDS = (
    "artifact_path",
    "model_id",
    "model_uuid",
    "run_id",
    "utc_time_created",
)
# skops loaders that name a file of the archive, and the zip entries' fixed time.
_FILE_LOADERS = frozenset(
    {"NdArrayNode", "SparseMatrixNode", "BytesNode", "BytearrayNode"}
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SCHEMA = "schema.json"


@dataclass(frozen=True)
class Checked:
    """A model directory that passed :func:`check`, and the skops bytes checked."""

    model_dir: Path
    skops_file: Path
    data: bytes
    trusted: list[str]
    conf: dict[str, Any]

    @property
    def sha256(self) -> str:
        """Hex sha256 of the checked skops bytes."""
        return hashlib.sha256(self.data).hexdigest()


def _refuse(where: Path, what: str) -> common.StageError:
    return common.StageError(f"refusing the model at {where}: {what}")


def inside(model_dir: Path, rel: Any, field: str, file: Path) -> Path:
    """``model_dir / rel`` if ``rel`` is a relative path that stays inside."""
    expected = f"expected a relative path inside {model_dir}"
    if not isinstance(rel, str) or not rel:
        raise _refuse(model_dir, f"{file} {field} is {rel!r}; {expected}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or ":" in rel:
        raise _refuse(model_dir, f"{file} {field} is {rel!r}; {expected}")
    path = model_dir / pure
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise _refuse(
            model_dir,
            f"{file} {field} {rel!r} resolves to {path.resolve()}; {expected}",
        )
    return path


def _no_escaping_links(model_dir: Path) -> None:
    root = model_dir.resolve()
    for path in sorted(model_dir.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise _refuse(
                model_dir,
                f"{path} is a symlink to {path.resolve()}; expected every file "
                f"inside {model_dir}",
            )


def _mapping(value: Any, where: Path, field: str, file: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(where, f"{file} {field} is {value!r}; expected a mapping")
    return value


def _unknown(keys: Iterable[str], allowed: frozenset[str]) -> list[str]:
    return sorted(str(k) for k in keys if k not in allowed)


def check_mlmodel(model_dir: Path, prefixes: Iterable[str]) -> dict[str, Any]:
    """The MLmodel of ``model_dir`` if it loads the sklearn flavor from a skops
    file inside the directory and nothing else; raise StageError otherwise."""
    file = model_dir / MLMODEL
    if not file.is_file():
        raise _refuse(model_dir, f"no {file}; expected an MLflow model directory")
    inside(model_dir, MLMODEL, "itself", file)
    try:
        conf = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _refuse(model_dir, f"{file} is not readable YAML: {e}") from e
    conf = _mapping(conf, model_dir, "top level", file)
    extra = _unknown(conf, TOP_KEYS)
    if extra:
        raise _refuse(
            model_dir,
            f"{file} has field(s) {', '.join(extra)}; expected only what "
            "mlflow.sklearn writes",
        )
    flavors = _mapping(conf.get("flavors"), model_dir, "flavors", file)
    others = _unknown(flavors, frozenset({SKLEARN_FLAVOR, PYFUNC_FLAVOR}))
    if others or SKLEARN_FLAVOR not in flavors:
        raise _refuse(
            model_dir,
            f"{file} flavors are {', '.join(sorted(map(str, flavors))) or 'none'}; "
            f"expected {SKLEARN_FLAVOR} (and {PYFUNC_FLAVOR})",
        )
    sk = _sklearn_flavor(model_dir, file, flavors[SKLEARN_FLAVOR], prefixes)
    if PYFUNC_FLAVOR in flavors:
        _pyfunc_flavor(model_dir, file, flavors[PYFUNC_FLAVOR], sk["pickled_model"])
    example = conf.get("saved_input_example_info")
    if example is not None:
        example = _mapping(example, model_dir, "saved_input_example_info", file)
        for key in EXAMPLE_PATHS:
            if key in example:
                inside(model_dir, example[key], f"saved_input_example_info.{key}", file)
    return conf


def _sklearn_flavor(
    model_dir: Path, file: Path, flavor: Any, prefixes: Iterable[str]
) -> dict[str, Any]:
    flavor = _mapping(flavor, model_dir, f"flavors.{SKLEARN_FLAVOR}", file)
    extra = _unknown(flavor, SKLEARN_KEYS)
    if extra:
        raise _refuse(
            model_dir,
            f"{file} flavors.{SKLEARN_FLAVOR} has {', '.join(extra)}; expected only "
            f"{', '.join(sorted(SKLEARN_KEYS))}",
        )
    fmt = flavor.get("serialization_format")
    if fmt != SKOPS:
        raise _refuse(
            model_dir,
            f"{file} flavors.{SKLEARN_FLAVOR}.serialization_format is {fmt!r}; "
            f"expected {SKOPS!r}",
        )
    if flavor.get("code") is not None:
        raise _refuse(
            model_dir,
            f"{file} flavors.{SKLEARN_FLAVOR}.code is {flavor['code']!r}; expected "
            "null (code paths are imported by MLflow's loader)",
        )
    inside(
        model_dir, flavor.get("pickled_model"), "flavors.sklearn.pickled_model", file
    )
    # MLflow's own loader trusts this list: it must be inside ours too.
    listed = flavor.get("skops_trusted_types") or []
    if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
        raise _refuse(
            model_dir,
            f"{file} flavors.{SKLEARN_FLAVOR}.skops_trusted_types is {listed!r}; "
            "expected a list of type names",
        )
    _allowed(model_dir, file, listed, prefixes)
    return flavor


def _pyfunc_flavor(model_dir: Path, file: Path, flavor: Any, model_path: str) -> None:
    at = f"flavors.{PYFUNC_FLAVOR}"
    flavor = _mapping(flavor, model_dir, at, file)
    extra = _unknown(flavor, PYFUNC_KEYS)
    if extra:
        raise _refuse(
            model_dir,
            f"{file} {at} has {', '.join(extra)}; expected only "
            f"{', '.join(sorted(PYFUNC_KEYS))}",
        )
    expected = {
        "loader_module": SKLEARN_LOADER,
        "model_path": model_path,
        "predict_fn": PREDICT_FN,
        "code": None,
    }
    for key, want in expected.items():
        got = flavor.get(key, want if key in ("predict_fn", "code") else None)
        if got != want:
            raise _refuse(model_dir, f"{file} {at}.{key} is {got!r}; expected {want!r}")
    env = flavor.get("env")
    if env is None:
        return
    if isinstance(env, str):  # MLflow 1.x wrote the conda file's name alone
        env = {"conda": env}
    env = _mapping(env, model_dir, f"{at}.env", file)
    extra = _unknown(env, ENV_KEYS)
    if extra:
        raise _refuse(
            model_dir,
            f"{file} {at}.env has {', '.join(extra)}; expected only conda, virtualenv",
        )
    for key, rel in env.items():
        inside(model_dir, rel, f"{at}.env.{key}", file)


def _resolve(dotted: str) -> Any:
    """The object a dotted type name names, importing the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {dotted!r}")


def _allowed(model_dir: Path, file: Path, types: list[str], prefixes: Iterable[str]):
    try:
        return common.trusted_types(types, prefixes)
    except common.StageError as e:
        raise _refuse(
            model_dir, f"{file}: {e}; expected only {', '.join(prefixes)}"
        ) from e


def check_types(types: Iterable[str], prefixes: Iterable[str]) -> list[str]:
    """The types a skops file needs trusted, if each may be loaded.

    Each must come from an allowed module (:func:`stages.common.trusted_types`)
    and be a class or a numpy ufunc: skops calls what a node names (a
    ``ReduceNode`` on ``builtins.exec`` would run its argument), so functions
    pass only from the estimators' own modules. Raises StageError naming each.
    """
    import numpy as np

    prefixes = tuple(prefixes)
    found = common.trusted_types(types, prefixes)
    # Functions only from the estimators' own modules (sklearn and the spec's
    # allow); from builtins, numpy, scipy and collections only classes.
    own = allowed_prefixes(
        p for p in prefixes if p not in common.TRUSTED_MODULE_PREFIXES
    )
    bad = []
    for dotted in found:
        try:
            obj = _resolve(dotted)
        except (ImportError, AttributeError):
            bad.append(f"{dotted} (cannot be imported)")
            continue
        if isinstance(obj, type | np.ufunc):
            continue
        if not in_modules(dotted, own):
            bad.append(f"{dotted} (a {type(obj).__name__}, not a class)")
    if bad:
        raise common.StageError(
            f"model contains callables skops would run: {', '.join(bad)}"
        )
    return found


def types_of(data: bytes) -> list[str]:
    """The types skops does not trust by itself in a skops archive."""
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(data=data))
    except Exception as e:  # skops raises many types for a damaged archive
        raise common.StageError(f"not a readable skops file: {e}") from e


def load_bytes(data: bytes, prefixes: Iterable[str], where: str) -> Any:
    """Load skops bytes trusting only their own types, each checked."""
    import skops.io

    try:
        trusted = check_types(types_of(data), prefixes)
    except common.StageError as e:
        raise common.StageError(f"refusing the model at {where}: {e}") from e
    return skops.io.loads(data, trusted=trusted)


def check(model_dir: str | Path, prefixes: Iterable[str]) -> Checked:
    """Check a model directory without loading it; the skops bytes read once."""
    model_dir = Path(model_dir)
    prefixes = tuple(prefixes)
    conf = check_mlmodel(model_dir, prefixes)
    _no_escaping_links(model_dir)
    skops_file = model_dir / conf["flavors"][SKLEARN_FLAVOR]["pickled_model"]
    if not skops_file.is_file():
        raise _refuse(model_dir, f"no skops file at {skops_file}")
    data = skops_file.read_bytes()
    try:
        trusted = check_types(types_of(data), prefixes)
    except common.StageError as e:
        raise _refuse(model_dir, f"{skops_file}: {e}") from e
    return Checked(model_dir, skops_file, data, trusted, conf)


def load(model_dir: str | Path, prefixes: Iterable[str]) -> tuple[Any, Checked]:
    """Check, then load the checked bytes; the model and what was checked."""
    import skops.io

    checked = check(model_dir, prefixes)
    return skops.io.loads(checked.data, trusted=checked.trusted), checked


def load_model_dir(model_dir: str | Path, prefixes: Iterable[str]) -> Any:
    """The pipeline of a model directory that passed :func:`check`."""
    return load(model_dir, prefixes)[0]


def canonical_skops(data: bytes) -> bytes:
    """The same skops archive with fixed entry times, ids renumbered in order
    of first appearance (entry names follow the new numbers) and the padding
    of structured arrays zeroed.

    The schema is written compact: skops indents it, which takes the pure
    Python JSON encoder and triples its size (a 300-tree forest: 6.3 MB and
    0.18 s against 2.0 MB and 0.02 s). skops reads either.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read(_SCHEMA))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}
        for node in _nodes(schema):
            if isinstance(node.get("__id__"), int):
                node["__id__"] = ids.setdefault(node["__id__"], len(ids))
            name = node.get("file")
            if node["__loader__"] in _FILE_LOADERS and isinstance(name, str):
                suffix = PurePosixPath(name).suffix
                node["file"] = files.setdefault(name, f"{len(files)}{suffix}")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for old, new in files.items():
                payload = src.read(old)
                if new.endswith(".npy"):
                    payload = _zero_padding(payload)
                _put(dst, new, payload)
            compact = json.dumps(schema, separators=(",", ":"))
            _put(dst, _SCHEMA, compact.encode("utf-8"))
    return out.getvalue()


def _zero_padding(npy: bytes) -> bytes:
    """A structured array's bytes with the padding between fields zeroed.

    numpy writes padding as it finds it in memory: a tree's node array (a
    ``uint8`` field then 7 bytes of padding) carries whatever the allocator
    left there, which differs between processes.
    """
    import numpy as np

    array = np.load(io.BytesIO(npy), allow_pickle=False)
    fields = array.dtype.fields
    if fields is None:
        return npy
    used = sum(fields[name][0].itemsize for name in array.dtype.names or ())
    if used == array.dtype.itemsize:
        return npy
    # np.zeros allocates zeroed memory; zeros_like would only fill the fields.
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    clean = np.zeros(array.shape, dtype=array.dtype, order="F" if fortran else "C")
    for name in array.dtype.names or ():
        clean[name] = array[name]
    out = io.BytesIO()
    np.save(out, clean, allow_pickle=False)
    return out.getvalue()


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every skops node of a schema, depth first in file order."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _put(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, _ZIP_TIME)
    info.create_system = 3  # unix, whatever the platform
    info.external_attr = 0o600 << 16
    archive.writestr(info, payload)


def canonical_bytes(obj: Any) -> bytes:
    """``obj`` saved by skops, as :func:`canonical_skops` bytes."""
    import skops.io

    return canonical_skops(skops.io.dumps(obj))


@contextmanager
def canonical_dumps(obj: Any, data: bytes) -> Iterator[None]:
    """While active, ``skops.io.dump`` (which MLflow's sklearn flavor calls)
    writes :func:`canonical_skops` bytes, so the logged artifact is canonical.

    ``data`` is ``obj`` already saved (:func:`canonical_bytes`, which train
    needs anyway to check its types): dumping ``obj`` itself writes those
    bytes rather than saving a large model a second time. Any other object is
    saved and made canonical as it is dumped.
    """
    import skops.io

    original = skops.io.dump

    def dump(value: Any, file: Any, **kwargs: Any) -> None:
        if value is obj:
            Path(file).write_bytes(data)
            return
        buffer = io.BytesIO()
        original(value, buffer, **kwargs)
        Path(file).write_bytes(canonical_skops(buffer.getvalue()))

    skops.io.dump = dump
    try:
        yield
    finally:
        skops.io.dump = original


def strip_identity(model_dir: Path) -> None:
    """Drop :data:`IDENTITY_FIELDS` from the MLmodel (same layout as MLflow's)."""
    file = model_dir / MLMODEL
    conf: Mapping[str, Any] = yaml.safe_load(file.read_text(encoding="utf-8"))
    kept = {k: v for k, v in conf.items() if k not in IDENTITY_FIELDS}
    file.write_text(yaml.safe_dump(kept, default_flow_style=False), encoding="utf-8")
