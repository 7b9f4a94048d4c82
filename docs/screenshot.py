"""Make docs/images/report.png: a real `mlops report` of the example, in a browser.

Run from the repository root with `.venv/bin/python docs/screenshot.py` (it takes
a few minutes: the example pipeline runs twice). In a temporary folder it copies
the example (`mlops.yaml` and `stages/`), runs it on `main`, then on a branch that
changes one training parameter, writes the report against `main` as the pull
request workflow does, renders `report.md` as GitHub-flavoured HTML in headless
Chromium, crops the page to its content and saves a palette PNG small enough to
commit. Nothing in the repository changes but the PNG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from runner.dvcstart import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images" / "report.png"
WIDTH = 960  # CSS pixels of the page; the PNG is this wide
MAX_HEIGHT = 3000  # the page is cut here at the latest, before the crop
# The change the pictured pull request makes (the same one tests/test_report.py makes).
CHANGE = ("n_estimators: 200", "n_estimators: 50")
# Close to GitHub's own rendering of a comment: its font stack, tables and code.
CSS = (
    "body{font-family:-apple-system,'Segoe UI','Noto Sans',Helvetica,Arial,"
    "sans-serif;font-size:14px;line-height:1.5;max-width:900px;margin:16px auto;"
    "padding:0 16px;color:#1f2328;background:#fff}"
    "table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #d1d9e0;padding:6px 13px}"
    "tr:nth-child(2n){background:#f6f8fa}img{max-width:100%}"
    "code{background:#eff1f3;padding:.2em .4em;border-radius:6px;font-size:85%}"
    "h2,h3{border-bottom:1px solid #d1d9e0;padding-bottom:.3em}"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # the example's own SQLite store
    env.update(QUIET_ENV)
    env.update(
        GIT_AUTHOR_NAME="docs",
        GIT_AUTHOR_EMAIL="docs@example.com",
        GIT_COMMITTER_NAME="docs",
        GIT_COMMITTER_EMAIL="docs@example.com",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def _sh(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")


def _mlops(*args: str, cwd: Path) -> None:
    _sh(sys.executable, "-m", "runner.cli", *args, cwd=cwd)


def make_report(work: Path) -> Path:
    """Run the example twice, as main and as a pull request; return report.md."""
    repo = work / "repo"
    repo.mkdir()
    shutil.copytree(
        ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "mlops.yaml", repo / "mlops.yaml")
    _sh("git", "init", "-q", "-b", "main", cwd=repo)
    _mlops("run", cwd=repo)
    _sh("git", "add", "-A", cwd=repo)
    _sh("git", "commit", "-q", "-m", "baseline", cwd=repo)
    _sh("git", "checkout", "-q", "-b", "fewer-trees", cwd=repo)
    spec = repo / "mlops.yaml"
    text = spec.read_text(encoding="utf-8")
    if CHANGE[0] not in text:
        sys.exit(
            f"mlops.yaml no longer holds {CHANGE[0]!r}: update CHANGE in {__file__}"
        )
    spec.write_text(text.replace(*CHANGE), encoding="utf-8")
    _mlops("run", cwd=repo)
    _mlops("report", "--output", "out", cwd=repo)
    return repo / "out" / "report.md"


def render_png(report: Path, work: Path) -> Path:
    """The report as HTML in headless Chromium; return the raw screenshot."""
    from markdown_it import MarkdownIt

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium is not installed (`make test` installs it as root)")
    md = MarkdownIt("commonmark").enable("table")
    body = md.render(report.read_text(encoding="utf-8"))
    page = report.with_name("report.html")
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style>"
        f"</head><body>{body}</body></html>",
        encoding="utf-8",
    )
    shot = work / "shot.png"
    subprocess.run(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={work / 'p'}",
            f"--window-size={WIDTH},{MAX_HEIGHT}", f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return shot


def shrink(shot: Path, out: Path) -> None:
    """Crop the white space below the content and save a 256-colour PNG."""
    from PIL import Image, ImageChops

    with Image.open(shot) as img:
        rgb = img.convert("RGB")
    background = Image.new("RGB", rgb.size, (255, 255, 255))
    box = ImageChops.difference(rgb, background).getbbox()
    if box is None:
        sys.exit(f"{shot} is blank: the report did not render")
    cropped = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + 16)))
    small = cropped.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    small.save(tmp, format="PNG", optimize=True)
    tmp.replace(out)


def main() -> None:
    """Write docs/images/report.png from a fresh run of the example."""
    with tempfile.TemporaryDirectory(prefix="mlops-screenshot-") as tmp:
        work = Path(tmp)
        shrink(render_png(make_report(work), work), OUT)
    size = OUT.stat().st_size
    sys.stdout.write(f"wrote {OUT.relative_to(ROOT)} ({size // 1024} KB)\n")


if __name__ == "__main__":
    main()
