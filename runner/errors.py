"""Errors in a spec, reported as ``file:line:col: key -> path: what was expected``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a spec, located by line, column and key path."""

    line: int
    col: int
    path: Path
    message: str

    def format(self, filename: str) -> str:
        where = " -> ".join(str(p) for p in self.path)
        prefix = f"{filename}:{self.line}:{self.col}: "
        return f"{prefix}{where}: {self.message}" if where else prefix + self.message


class SpecError(Exception):
    """A spec that cannot be used. Carries every problem found, not only the first."""

    def __init__(self, filename: str, problems: Iterable[Problem]) -> None:
        self.filename = filename
        self.problems: Sequence[Problem] = sorted(set(problems))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [p.format(self.filename) for p in self.problems]


class RunError(Exception):
    """A command that failed for a reason the user can act on (not a spec error)."""

    # The command's exit code; runner.runlock.Busy (another run holds the
    # repository) says 75.
    exit_code = 1


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most like ``name``, if one is like it at all."""
    import difflib

    close = difflib.get_close_matches(name, list(options), n=1)
    return close[0] if close else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``options``, or ''."""
    close = closest(name, options)
    return f"; did you mean {close!r}?" if close else ""
