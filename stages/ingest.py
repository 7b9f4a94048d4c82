"""Ingest: snapshot a data source as Parquet so DVC can track its content.

Sources (under ``data:`` in the spec): a local file (CSV, Parquet, JSON), an
http(s) URL, a SQL query through SQLAlchemy, or a scikit-learn bundled data set;
then the rows of the files its ``append:`` list names (what ``mlops retrain``
adds when production data drifted).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from stages import common, run_then_leave

KIND = "ingest"
FORMATS = ("csv", "parquet", "json")
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
}
# Bundled data sets with a single target, loadable with as_frame=True.
SKLEARN_DATASETS = ("breast_cancer", "diabetes", "iris", "wine", "digits")


def detect_format(location: str, fmt: str | None = None) -> str:
    """Return the file format from ``fmt`` or from the location's suffix."""
    if fmt:
        if fmt not in FORMATS:
            raise common.StageError(
                f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}"
            )
        return fmt
    suffix = PurePosixPath(urlparse(location).path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise common.StageError(
            f"cannot tell the format of {location!r} from its suffix; "
            f"set format: to one of {', '.join(FORMATS)}"
        )
    return SUFFIX_FORMATS[suffix]


def read_file(location: str, fmt: str) -> pd.DataFrame:
    """Read a local path or URL in the given format."""
    sep = "\t" if location.lower().endswith(".tsv") else ","
    readers = {
        "csv": lambda: pd.read_csv(location, sep=sep),
        "parquet": lambda: common.read_parquet(location),
        "json": lambda: pd.read_json(location, lines=location.endswith(".jsonl")),
    }
    return readers[fmt]()


def read_sklearn(name: str) -> pd.DataFrame:
    """Load a bundled scikit-learn data set; the target column is ``target``."""
    import sklearn.datasets

    if name not in SKLEARN_DATASETS:
        raise common.StageError(
            f"unknown sklearn data set {name!r}; "
            f"use one of {', '.join(SKLEARN_DATASETS)}"
        )
    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    if "target" not in frame.columns:
        frame["target"] = bunch.target
    return frame


def read_sql(url: str, query: str) -> pd.DataFrame:
    """Run a SQL query through SQLAlchemy and return the result."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sqlalchemy.text(query), conn)
    finally:
        engine.dispose()


def load_source(source: Mapping[str, Any]) -> pd.DataFrame:
    """Read the data source described by one entry under ``data:``."""
    fmt = source.get("format")
    if "sklearn" in source:
        return read_sklearn(str(source["sklearn"]))
    if "sql" in source:
        sql = source["sql"] or {}
        if not sql.get("url") or not sql.get("query"):
            raise common.StageError("a sql source needs both 'url' and 'query'")
        return read_sql(sql["url"], sql["query"])
    if "url" in source:
        url = str(source["url"])
        if urlparse(url).scheme not in ("http", "https"):
            raise common.StageError(f"url must be http(s), not {url!r}")
        return read_file(url, detect_format(url, fmt))
    if "path" in source:
        path = Path(source["path"])
        if not path.exists():
            raise common.StageError(f"data file {path} not found")
        return read_file(str(path), detect_format(str(path), fmt))
    raise common.StageError("a data source needs one of: path, url, sql, sklearn")


def read_appended(path: str, fmt: str | None = None) -> pd.DataFrame:
    """One file of a source's ``append:`` list (a path in the repository)."""
    if not Path(path).is_file():
        raise common.StageError(f"appended data file {path} not found")
    return read_file(path, detect_format(path, fmt))


def append_rows(
    df: pd.DataFrame, extra: Sequence[tuple[str, pd.DataFrame]]
) -> pd.DataFrame:
    """The source's rows, then each appended file's, in the source's columns.

    An appended file must hold every column of the source (extra columns are
    dropped): a missing one would become nulls that train on silently.
    """
    if not extra:
        return df
    pieces = [df]
    for name, more in extra:
        missing = [c for c in df.columns if c not in more.columns]
        if missing:
            raise common.StageError(
                f"appended file {name} lacks the source's columns "
                f"{', '.join(map(repr, missing[:10]))}"
            )
        pieces.append(more.loc[:, list(df.columns)].astype(df.dtypes.to_dict()))
    return pd.concat(pieces, ignore_index=True)


def select_columns(df: pd.DataFrame, columns: Sequence[str] | None) -> pd.DataFrame:
    """Keep only ``columns`` (in that order) when given."""
    if not columns:
        return df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise common.StageError(
            f"columns not in the source: {', '.join(map(repr, missing))}"
        )
    return df.loc[:, list(columns)]


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    settings = spec["with"]
    name = settings.get("source")
    sources = params.get("data") or {}
    if name not in sources:
        raise common.StageError(
            f"source {name!r} is not defined under data: "
            f"({', '.join(sorted(sources)) or 'none defined'})"
        )
    start = time.perf_counter()
    source = sources[name] or {}
    columns = settings.get("columns")
    try:
        df = select_columns(load_source(source), columns)
        extra = [
            (path, select_columns(read_appended(path), columns))
            for path in source.get("append") or ()
        ]
        df = append_rows(df, extra)
    except common.StageError:
        raise
    except Exception as e:  # readers raise many types; report them as one line
        raise common.StageError(f"cannot read source {name!r}: {e}") from e
    out = common.need(spec, "outputs", "data")
    common.write_parquet(df, out)
    appended = f" ({sum(len(e) for _, e in extra)} appended)" if extra else ""
    common.say(
        KIND,
        f"read {len(df)} rows{appended} x {df.shape[1]} columns from {name!r} "
        f"in {time.perf_counter() - start:.1f}s -> {out}",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ingest stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    run_then_leave(main)
