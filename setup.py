"""Build hook only; the project's metadata is in pyproject.toml.

The wheel carries files that the repository keeps at its root (the schema, the
constraints, the team Dockerfile) in ``runner/_data/``, copied in at build
time, so that the repository holds one copy of each and an installed framework
finds them beside its code (runner.framework.packaged_file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# runner.framework.PACKAGED_FILES; not imported: the build runs before install.
PACKAGED_FILES = ("schema/mlops.schema.json", "constraints.txt", "Dockerfile.team")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        here = Path(__file__).resolve().parent
        for name in PACKAGED_FILES:
            target = Path(self.build_lib) / "runner" / "_data" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(here / name, target)


setup(cmdclass={"build_py": BuildPy})
