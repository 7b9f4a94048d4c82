"""Validate: column rules, row counts and deepchecks suites on the data.

Every rule is checked on every row with vectorised pandas. Failing ``error``
rules (or suites with severity ``error``) make the stage exit 1, after
``validation.json`` and the HTML report are written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stages import common, run_then_leave, suites

KIND = "validate"
SEVERITIES = suites.SEVERITIES
TYPES = ("integer", "float", "number", "string", "boolean", "datetime", "category")
SUITES = ("data_integrity", "train_test_validation")


def _type_ok(series: pd.Series, expected: str) -> bool:
    api = pd.api.types
    dtype = series.dtype
    if expected == "integer":
        if api.is_bool_dtype(dtype):
            return False
        if api.is_integer_dtype(dtype):
            return True
        # Nulls turn integer columns into floats; accept whole-valued floats.
        values = series.dropna()
        return bool(api.is_float_dtype(dtype) and (values == values.round()).all())
    checks = {
        "float": api.is_float_dtype,
        "number": lambda d: api.is_numeric_dtype(d) and not api.is_bool_dtype(d),
        "string": lambda d: api.is_string_dtype(d) or api.is_object_dtype(d),
        "boolean": api.is_bool_dtype,
        "datetime": api.is_datetime64_any_dtype,
        "category": lambda d: (
            isinstance(d, pd.CategoricalDtype)
            or api.is_string_dtype(d)
            or api.is_object_dtype(d)
        ),
    }
    return bool(checks[expected](dtype))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def check_column(series: pd.Series, rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check one column against its rules; one result per rule."""
    col = str(series.name)
    sev = rules.get("severity", "error")
    if sev not in SEVERITIES:
        raise common.StageError(f"column '{col}': severity must be error or warning")
    out = []
    if "type" in rules:
        want = rules["type"]
        if want not in TYPES:
            raise common.StageError(f"column '{col}': unknown type {want!r}")
        ok = _type_ok(series, want)
        out.append(
            suites.check_result(
                "type",
                col,
                sev,
                ok,
                f"dtype {series.dtype} is {want}"
                if ok
                else f"dtype {series.dtype} is not {want}",
            )
        )
    for bound in ("min", "max"):
        if bound not in rules:
            continue
        limit = rules[bound]
        if not pd.api.types.is_numeric_dtype(series.dtype) and not (
            pd.api.types.is_datetime64_any_dtype(series.dtype)
        ):
            out.append(
                suites.check_result(
                    bound,
                    col,
                    sev,
                    False,
                    f"{bound} needs a numeric column, dtype {series.dtype}",
                )
            )
            continue
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            limit = pd.Timestamp(limit)
        bad = int((series < limit).sum() if bound == "min" else (series > limit).sum())
        word = "below min" if bound == "min" else "above max"
        out.append(
            suites.check_result(
                bound,
                col,
                sev,
                bad == 0,
                f"{_plural(bad, 'value')} {word} {rules[bound]}",
            )
        )
    if "allowed" in rules:
        allowed = list(rules["allowed"])
        values = series.dropna()
        mask = ~values.isin(allowed)
        bad = int(mask.sum())
        examples = ", ".join(map(repr, values[mask].unique()[:5].tolist()))
        out.append(
            suites.check_result(
                "allowed",
                col,
                sev,
                bad == 0,
                f"{_plural(bad, 'value')} not in {allowed}"
                + (f" (e.g. {examples})" if bad else ""),
            )
        )
    if "max_null_share" in rules:
        limit = float(rules["max_null_share"])
        share = float(series.isna().mean()) if len(series) else 0.0
        out.append(
            suites.check_result(
                "max_null_share",
                col,
                sev,
                share <= limit,
                f"null share {share:.3f} {'<=' if share <= limit else '>'} {limit}",
            )
        )
    if rules.get("unique"):
        dup = int(series.dropna().duplicated().sum())
        out.append(
            suites.check_result(
                "unique", col, sev, dup == 0, f"{_plural(dup, 'duplicate value')}"
            )
        )
    return out


def check_rules(
    df: pd.DataFrame,
    columns: Mapping[str, Mapping[str, Any]] | None,
    rows: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """Check the column and row rules of the spec against ``df``."""
    results = []
    if rows:
        sev = rows.get("severity", "error")
        n = len(df)
        if "min" in rows:
            ok = n >= rows["min"]
            results.append(
                suites.check_result(
                    "rows.min",
                    None,
                    sev,
                    ok,
                    f"{n} rows {'>=' if ok else '<'} min {rows['min']}",
                )
            )
        if "max" in rows:
            ok = n <= rows["max"]
            results.append(
                suites.check_result(
                    "rows.max",
                    None,
                    sev,
                    ok,
                    f"{n} rows {'<=' if ok else '>'} max {rows['max']}",
                )
            )
    for col, col_rules in (columns or {}).items():
        rules = col_rules or {}
        if col not in df.columns:
            sev = rules.get("severity", "error")
            results.append(
                suites.check_result("exists", col, sev, False, "column is missing")
            )
            continue
        results.extend(check_column(df[col], rules))
    return results


def identifiers(columns: Mapping[str, Any] | None) -> list[str]:
    """The columns whose rule says ``unique``: identifiers, as `mlops init`
    marks them. Left out of the suites: a value that differs on every row makes
    every row distinct, so deepchecks would never find a duplicated row or two
    rows that agree on every feature and disagree on the label."""
    return [name for name, rules in (columns or {}).items() if rules.get("unique")]


def run_suites(
    requested: Mapping[str, str],
    data: pd.DataFrame,
    *,
    train: pd.DataFrame | None,
    test: pd.DataFrame | None,
    target: str,
    report: Path,
    leave_out: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run the requested deepchecks suites on every column but ``leave_out``;
    write their HTML into ``report``."""
    unknown = [s for s in requested if s not in SUITES]
    if unknown:
        raise common.StageError(
            f"unknown suite(s) {', '.join(unknown)}; use {', '.join(SUITES)}"
        )
    results: list[dict[str, Any]] = []
    pages: list[tuple[str, str]] = []
    for suite, severity in requested.items():
        if severity not in SEVERITIES:
            raise common.StageError(f"suite {suite}: severity must be error or warning")
        if suite == "train_test_validation" and (train is None or test is None):
            results.append(
                suites.check_result(
                    suite, None, severity, True, "skipped: needs train and test inputs"
                )
            )
            continue
        suites.load_deepchecks()
        from deepchecks.tabular import suites as dc_suites

        if suite == "data_integrity":
            res = suites.applicable(dc_suites.data_integrity()).run(
                suites.deepchecks_dataset(data, target, leave_out)
            )
        else:
            res = suites.applicable(dc_suites.train_test_validation()).run(
                suites.deepchecks_dataset(train, target, leave_out),
                suites.deepchecks_dataset(test, target, leave_out),
            )
        results.extend(suites.suite_results(suite, severity, res))
        pages.append((suite, suites.suite_html(res)))
    suites.write_suite_report(report, pages, "Validation report")
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and the overall verdict: failed only by failing error rules."""
    failed = [r for r in results if not r["passed"]]
    errors = [r for r in failed if r["severity"] == "error"]
    return {
        "passed": not errors,
        "counts": {
            "checks": len(results),
            "passed": len(results) - len(failed),
            "failed_errors": len(errors),
            "failed_warnings": len(failed) - len(errors),
        },
        "results": results,
    }


def _describe(r: dict[str, Any]) -> str:
    where = f"column '{r['column']}': " if r["column"] else f"{r['name']}: "
    return f"{where}{r['detail']} ({r['severity']})"


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    proj = common.project(params)
    settings = spec["with"]
    start = time.perf_counter()
    data = common.read_parquet(common.need(spec, "inputs", "data"))
    # Nothing can be trained on data without its target: said here, at the
    # spec's key, not three stages later in preprocess.
    common.require_target(data.columns, proj["target"])
    results = check_rules(data, settings.get("columns"), settings.get("rows"))
    opt = {r: common.role_path(spec, "inputs", r) for r in ("train", "test")}
    frames = {
        r: common.read_parquet(p) if p and p.exists() else None for r, p in opt.items()
    }
    requested = settings.get("suites") or {}
    leave_out = [c for c in identifiers(settings.get("columns")) if c in data]
    if requested and leave_out:
        common.say(
            KIND, f"the suites leave out {', '.join(leave_out)} (unique: identifiers)"
        )
    results += run_suites(
        requested,
        data,
        train=frames["train"],
        test=frames["test"],
        target=proj["target"],
        report=common.need(spec, "outputs", "validation_report"),
        leave_out=leave_out,
    )
    summary = summarize(results)
    common.write_json(common.need(spec, "outputs", "validation"), summary)
    for r in results:
        if not r["passed"]:
            common.say(KIND, _describe(r))
    counts = summary["counts"]
    common.say(
        KIND,
        f"{counts['passed']}/{counts['checks']} checks passed on {len(data)} rows "
        f"({counts['failed_warnings']} warnings) in {time.perf_counter() - start:.1f}s",
    )
    errors = [r for r in results if not r["passed"] and r["severity"] == "error"]
    if errors:
        raise common.StageError("; ".join(_describe(r) for r in errors))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the validate stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    run_then_leave(main)
