"""The GitHub Actions the generated workflows use, pinned by commit.

A tag can be moved to other code; a commit cannot, so every `uses:` names a
commit and keeps its tag in a comment. The commits were copied from the
reference table of tags (github-actions-tags.json, read from each action's own
repository), taking the newest stable release of each action; tests check that
every pin here is still in that table. The compiler never reads the table: it
stays pure and works without it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pin:
    """One action at one release: `uses: <action>@<commit> # <tag>`."""

    action: str
    tag: str
    commit: str

    @property
    def ref(self) -> str:
        return f"{self.action}@{self.commit}"


CHECKOUT = "actions/checkout"
SETUP_PYTHON = "actions/setup-python"
SETUP_CML = "iterative/setup-cml"
UPLOAD_ARTIFACT = "actions/upload-artifact"

PINS: tuple[Pin, ...] = (
    Pin(CHECKOUT, "v7.0.1", "3d3c42e5aac5ba805825da76410c181273ba90b1"),
    Pin(SETUP_PYTHON, "v7.0.0", "5fda3b95a4ea91299a34e894583c3862153e4b97"),
    Pin(SETUP_CML, "v2.0.1", "f12ea7685438c1fc438d50f77519b3860cf5fa98"),
    Pin(UPLOAD_ARTIFACT, "v7.0.0", "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"),
)


def pin(action: str) -> Pin:
    """The pinned release of an action, or a KeyError that says what to add."""
    for candidate in PINS:
        if candidate.action == action:
            return candidate
    raise KeyError(
        f"action {action!r} is not pinned: add it to PINS in {__name__} with a "
        "commit taken from the reference table of tags"
    )
