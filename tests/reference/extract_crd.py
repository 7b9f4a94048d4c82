"""Copy what the tests need from a CustomResourceDefinition: one version's schema.

    python tests/reference/extract_crd.py CRD.yaml VERSION OUT.json [--only spec.predictor]

Descriptions are dropped (they do not validate anything) and, with --only, the
other fields of that object become `{"type": "object"}`, to keep the copy small.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("crd")
    p.add_argument("version")
    p.add_argument("out")
    p.add_argument("--only", help="dotted path of the one field kept in full")
    args = p.parse_args()
    with open(args.crd, encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == args.version)
    schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
    if args.only:
        *parents, kept = args.only.split(".")
        node = schema
        for key in parents:
            node = node["properties"][key]
        node["properties"] = {
            k: v if k == kept else {"type": "object"}
            for k, v in node["properties"].items()
        }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(schema, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
