"""deepchecks for validate, evaluate and the monitor: load it, run suites, keep pages.

Its own module, so that a change here re-runs the stages that use deepchecks
(validate and evaluate declare it; runner/builtins.py) and no other.
:func:`check_result` is the one shape of a validation result, deepchecks' or
validate's own rules.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

import stages
from stages import common

# How much a failed check matters: an error stops the pipeline, a warning is
# reported (validate's rules and suites, and evaluate's suite).
SEVERITIES = ("error", "warning")
WARNING = "warning"


def check_result(
    name: str, column: str | None, severity: str, passed: bool, detail: str
) -> dict[str, Any]:
    return {
        "name": name,
        "column": column,
        "severity": severity,
        "passed": bool(passed),
        "detail": detail,
    }


def load_deepchecks() -> None:
    """Call before deepchecks' first import: it imports jsonschema (through
    nbformat), and :mod:`runner.jsonschema_import` leaves out the format
    checkers' libraries, 1.5 to 2 s of imports deepchecks never uses."""
    from runner import jsonschema_import

    jsonschema_import.load()
    stages.quiet_pkg_resources()


def deepchecks_dataset(
    df: pd.DataFrame, target: str, leave_out: Iterable[str] = ()
) -> Any:
    """A deepchecks Dataset: non-numeric (and boolean) features are categorical.

    ``leave_out``: columns that are not features (identifiers), dropped first.
    """
    load_deepchecks()
    from deepchecks.tabular import Dataset

    df = df.drop(columns=[c for c in leave_out if c in df.columns and c != target])
    label = target if target in df.columns else None
    features = [c for c in df.columns if c != target]
    cat = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(df[c].dtype)
        or pd.api.types.is_bool_dtype(df[c].dtype)
    ]
    return Dataset(df, label=label, cat_features=cat)


# The checks of deepchecks' suites that need an index or a datetime column,
# which the datasets above never name: they could only report that they did
# not run (now a warning, see suite_results), on every run.
NEEDS_INDEX_OR_DATETIME = (
    "IdentifierLabelCorrelation",
    "IndexTrainTestLeakage",
    "DateTrainTestLeakageDuplicates",
    "DateTrainTestLeakageOverlap",
)


# How deepchecks words a check that does not apply to the task or the inputs
# ("Check is irrelevant for regression tasks", "... for Datasets without
# model"), raised when the check runs: such a check is left out, as above.
IRRELEVANT = "Check is irrelevant"


def applicable(suite: Any) -> Any:
    """``suite`` without the checks that cannot run on our datasets."""
    for index, check in list(suite.checks.items()):
        if type(check).__name__ in NEEDS_INDEX_OR_DATETIME:
            suite.remove(index)
    return suite


def suite_results(suite: str, severity: str, result: Any) -> list[dict[str, Any]]:
    """Turn a deepchecks SuiteResult into one result per check."""
    from deepchecks.core.check_result import CheckFailure

    out = []
    for check in result.results:
        name = f"{suite}: {check.get_header()}"
        if isinstance(check, CheckFailure) and str(check.exception).startswith(
            IRRELEVANT
        ):
            continue  # not for this task (a regression) or these inputs
        if isinstance(check, CheckFailure):
            # Not a pass: the check said nothing. A warning, as deepchecks
            # itself shows it, so that the pipeline goes on.
            out.append(
                check_result(
                    name,
                    None,
                    WARNING,
                    False,
                    f"check could not run: {check.exception}",
                )
            )
            continue
        conds = getattr(check, "conditions_results", None) or []
        failed = [c for c in conds if c.category.value == "FAIL"]
        # A condition deepchecks grades as a warning (WARN: 17% duplicated
        # rows) or could not evaluate (ERROR) is not met either: shown as a
        # warning whatever the suite's severity, never as a pass.
        unmet = failed or [c for c in conds if c.category.value != "PASS"]
        detail = "; ".join(f"{c.name}: {c.details}" for c in (unmet or conds))
        out.append(
            check_result(
                name,
                None,
                WARNING if unmet and not failed else severity,
                not unmet,
                detail or "no conditions",
            )
        )
    return out


def suite_html(result: Any) -> str:
    """The full HTML page of a deepchecks result."""
    # save_as_html never overwrites (it writes "name (1).html"): use a fresh dir.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.html"
        result.save_as_html(str(path), as_widget=False)
        return path.read_text(encoding="utf-8")


def write_suite_report(report: Path, pages: list[tuple[str, str]], title: str) -> None:
    """Write deepchecks pages as one HTML file (a note when none ran)."""
    common.ensure_parent(report)
    if report.exists():
        report.unlink()
    if len(pages) == 1:
        report.write_text(pages[0][1], encoding="utf-8")
        return
    if not pages:
        body = "<p>No deepchecks suite ran for this stage.</p>"
    else:
        # Several suites: keep each full page isolated in its own iframe.
        body = "".join(
            f"<h2>{html.escape(name)}</h2><iframe style='width:100%;height:80vh' "
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
            for name, page in pages
        )
    report.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}"
        f"</title></head><body><h1>{title}</h1>{body}</body></html>\n",
        encoding="utf-8",
    )
