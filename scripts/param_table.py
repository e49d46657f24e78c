#!/usr/bin/env python3
"""Keep README.md's parameter table in step with config/selfi.yaml.

    python scripts/param_table.py            # print the markdown table
    python scripts/param_table.py --write    # rewrite the table between the README markers
    python scripts/param_table.py --check    # exit 1 when README.md is out of date (used by the tests)
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- params:begin -->", "<!-- params:end -->"
_ROW = re.compile(r"^\s{4}(\w+):\s*(.*?)\s+#\s*(.*)$")
_SECTION = re.compile(r"^\s+#\s*---\s*(.*)$")


def table(yaml_path: pathlib.Path = ROOT / "config" / "selfi.yaml") -> str:
    """Markdown table (name | default | meaning) of every parameter in the YAML, grouped by its sections."""
    lines = ["| parameter | default | meaning (unit) |", "|---|---|---|"]
    for raw in yaml_path.read_text().splitlines():
        if m := _SECTION.match(raw):
            lines.append(f"| **{m.group(1)}** | | |")
        elif m := _ROW.match(raw):
            default = m.group(2) if m.group(2) not in ("''", '""') else "(empty)"
            lines.append(f"| `{m.group(1)}` | `{default}` | {m.group(3).replace('|', '/')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    new = table()
    if not (args.write or args.check):
        print(new)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks the markers {BEGIN} / {END}", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{BEGIN}\n{new}\n{END}{tail}"
    if args.check:
        if updated != text:
            print("README.md parameter table is out of date: run python scripts/param_table.py --write",
                  file=sys.stderr)
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
