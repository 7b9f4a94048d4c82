"""Copy what the tests need from the table of GitHub Actions tags.

    python tests/reference/extract_tags.py github-actions-tags.json OUT.json

Keeps every tag of each action that runner/targets/pins.py pins, so the tests
can still tell whether a pin is the newest release. Run by hand, to refresh
the copy; tests never run it.
"""

from __future__ import annotations

import argparse
import json

from runner.targets import pins


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("out")
    args = p.parse_args()
    with open(args.source, encoding="utf-8") as f:
        table = json.load(f)
    actions = sorted({pin.action for pin in pins.PINS})
    extract = {
        "_about": table["_about"],
        "actions": {a: table["actions"][a] for a in actions},
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(extract, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
