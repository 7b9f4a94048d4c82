"""The documentation: the spec reference matches the schema, and no link is dead."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt

from runner import specdoc
from runner.schema import SCHEMA_PATH
from tests import figures
from tests.support import ROOT

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...
MAX_IMAGE_BYTES = 300 * 1024


# --- the spec reference ----------------------------------------------------


def test_spec_reference_is_what_the_schema_generates() -> None:
    committed = specdoc.OUTPUT.read_text(encoding="utf-8")
    generated = specdoc.render()
    if committed != generated:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    "docs/spec-reference.md (committed)",
                    "docs/spec-reference.md (from the schema)",
                )
            )[:60]
        )
        pytest.fail(
            "docs/spec-reference.md is stale: run `make docs` "
            f"(or `.venv/bin/python -m runner.specdoc`) and commit it\n{diff}"
        )


def test_generating_twice_gives_the_same_bytes() -> None:
    assert specdoc.render() == specdoc.render()


def _property_names(node: Any, found: set[str]) -> set[str]:
    """Every key under `properties` anywhere in the schema, walked independently."""
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            if value is not False:
                found.add(key)
        for value in node.values():
            _property_names(value, found)
    elif isinstance(node, list):
        for value in node:
            _property_names(value, found)
    return found


def test_every_key_of_the_schema_has_a_row() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    page = specdoc.render()
    rows = set(re.findall(r"^\| \[?`([^`]+)`", page, flags=re.MULTILINE))
    last_parts = {row.rsplit(".", 1)[-1].removesuffix("[]") for row in rows}
    missing = sorted(_property_names(schema, set()) - last_parts)
    assert missing == []


def test_every_default_of_the_schema_is_shown() -> None:
    page = specdoc.render()
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    defaults = re.findall(r'"default": ("[^"]*"|[-0-9.]+|true|false)', text)
    assert defaults
    for raw in defaults:
        value = json.loads(raw)
        shown = value if isinstance(value, str) else json.dumps(value)
        assert f"| `{shown}` |" in page, raw


def test_check_mode_names_the_command_and_writing_makes_it_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "docs" / "spec-reference.md"
    monkeypatch.setattr(specdoc, "ROOT", tmp_path)
    monkeypatch.setattr(specdoc, "OUTPUT", page)
    assert specdoc.main(["--check"]) == 2  # no schema/: not a checkout
    assert "is not a checkout of the framework" in capsys.readouterr().err
    (tmp_path / "schema").mkdir()
    shutil.copy(SCHEMA_PATH, tmp_path / "schema")
    assert specdoc.main(["--check"]) == 1
    assert "docs/spec-reference.md is stale: run `make docs`" in capsys.readouterr().err
    assert not page.exists()
    assert specdoc.main([]) == 0
    assert page.read_text(encoding="utf-8") == specdoc.render()
    assert specdoc.main(["--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n")
    assert specdoc.main(["--check"]) == 1


def test_a_keyword_the_generator_cannot_read_is_an_error() -> None:
    schema = {
        "type": "object",
        "properties": {"x": {"type": "object", "patternProperties": {"^a": {}}}},
        "$defs": {},
    }
    with pytest.raises(
        specdoc.SchemaShapeError, match=r"x: unknown keyword 'patternProperties'"
    ):
        specdoc.Walker(schema).page()


def test_every_row_has_its_six_cells_even_with_a_pipe_in_a_pattern() -> None:
    rows = [r for r in specdoc.render().splitlines() if re.match(r"\| \[?`", r)]
    assert rows
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row.strip().removeprefix("|").removesuffix("|"))
        assert len(cells) == len(specdoc.COLUMNS), row
    memory = [r for r in rows if r.startswith("| `argo.resources.memory` |")]
    assert len(memory) == 1 and "(Ki\\|Mi\\|Gi\\|Ti)" in memory[0]


# --- links -----------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (without its duplicate suffix)."""
    kept = []
    for char in heading.strip().lower():
        category = unicodedata.category(char)
        if char in " -" or category[0] in "LMN" or category == "Pc":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def _inline_text(token: Any) -> str:
    return "".join(
        child.content
        for child in token.children or ()
        if child.type in {"text", "code_inline"}
    )


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeats."""
    tokens = (
        MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))
    )
    seen: dict[str, int] = {}
    out = set()
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        base = slug(_inline_text(tokens[i + 1]))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[str]:
    """The targets of every link and image in a Markdown file (not in code)."""
    md = MarkdownIt("commonmark").enable("table")
    found = []
    for token in md.parse(path.read_text(encoding="utf-8")):
        for child in token.children or ():
            if child.type == "link_open":
                found.append(str(child.attrGet("href")))
            elif child.type == "image":
                found.append(str(child.attrGet("src")))
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dead_links(path: Path) -> list[str]:
    """Relative links of one page whose file or heading does not exist."""
    dead = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            dead.append(f"{target}: no file {_shown(dest)}")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            dead.append(f"{target}: no heading #{anchor} in {_shown(dest)}")
    return dead


def test_github_slugs() -> None:
    assert slug("Deployment by merge: `deploy/` in git, and rollback") == (
        "deployment-by-merge-deploy-in-git-and-rollback"
    )
    assert slug("`pipeline.<stage>.with` with `uses: train`") == (
        "pipelinestagewith-with-uses-train"
    )
    assert slug("Settings (`argo:` in mlops.yaml)") == "settings-argo-in-mlopsyaml"
    assert slug("Cramér's V") == "cramérs-v"


def test_the_link_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n\n## Again\n\n## Again\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#real-heading) [dup](b.md#again-1) [self](#top) [web](https://x.org)\n"
        "[gone](c.md) [bad](b.md#nope) `[code](not-a-link.md)`\n\n# Top\n"
    )
    dead = [entry.split(":")[0] for entry in dead_links(page)]
    assert dead == ["c.md", "b.md#nope"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dead_relative_link(page: Path) -> None:
    assert dead_links(page) == []


def test_every_docs_page_is_in_the_index() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    pages = set((ROOT / "docs").glob("*.md")) - {index}
    assert sorted(p.name for p in pages - linked) == []


def test_every_command_of_the_cli_has_a_row_in_the_commands_page() -> None:
    from runner.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `mlops ([a-z]+)", text, flags=re.MULTILINE))
    assert sorted(set(sub.choices or ()) - rows) == []


def test_every_option_of_a_command_is_in_its_usage_on_the_commands_page() -> None:
    from runner.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    missing = []
    for name, command in (sub.choices or {}).items():
        usages = " ".join(
            re.findall(rf"^\| `(mlops {name}\b[^`]*)`", text, flags=re.MULTILINE)
        )
        for action in command._actions:
            # -h and -f are every command's, said once under the table.
            longs = [o for o in action.option_strings if o.startswith("--")]
            if longs and longs[0] not in ("--help", "--file"):
                if not re.search(rf"{re.escape(longs[0])}(?![\w-])", usages):
                    missing.append(f"mlops {name} {longs[0]}")
    assert missing == []


# --- the front page --------------------------------------------------------


def test_readme_opens_with_the_two_commands_the_makefile_has() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```")[1]
    commands = re.findall(r"^make (\w+)", first_block, flags=re.MULTILINE)
    assert commands == ["run", "test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_images_in_the_docs_are_small_pngs() -> None:
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert images, "docs/images/report.png is missing: run docs/screenshot.py"
    for image in images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
        assert image.stat().st_size < MAX_IMAGE_BYTES, image


def _figure_rows(text: str) -> list[str]:
    """The test of each row of the README's reliability table."""
    _, _, rest = text.partition(figures.BEGIN)
    block, found, _ = rest.partition(figures.END)
    assert found, "README.md: the reliability table's markers are missing"
    rows = [line for line in block.splitlines() if line.startswith("| ")][1:]
    return [
        "::".join(re.findall(r"`([^`]+)`", row.rsplit(" | ", 1)[-1])) for row in rows
    ]


def test_every_test_that_records_a_figure_has_its_row_in_the_readme() -> None:
    """The table is generated (`make figures`); this catches a stale one."""
    rows = _figure_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    tests = figures.recording_tests()
    assert len(tests) > 20, "the scan for tests taking `figure` found too few"
    missing = sorted(set(tests) - set(rows))
    assert not missing, f"no row for {missing}: run `make test`, then `make figures`"
    assert sorted(rows) == sorted(set(rows)), "a test has two rows"
    assert set(rows) <= set(tests), "a row names a test that no longer exists"


def test_the_figures_table_renders_a_parametrised_test_as_one_row() -> None:
    rows = {
        "tests/reliability/test_x.py::test_y[a]": figures.row(
            "fault", "c", "r", {"seconds": 1.5}
        ),
        "tests/reliability/test_x.py::test_y[b]": figures.row(
            "fault", "c", "r", {"seconds": 2.5}
        ),
        "tests/reliability/test_x.py::test_gone": figures.row("load", "c", "r", {}),
    }
    table = figures.table(rows, ["tests/reliability/test_x.py::test_y"])
    assert table.splitlines()[2:] == [
        "| fault | c | r | cases 2, max seconds 2.5 | "
        "`tests/reliability/test_x.py` `test_y` |"
    ]
