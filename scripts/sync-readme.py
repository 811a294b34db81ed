#!/usr/bin/env python3
"""Copies docs/*.md into README.md between their markers.

README.md holds `<!-- BEGIN docs/NAME.md -->` ... `<!-- END docs/NAME.md -->`
blocks; this script replaces each block's body with the file's text (minus a
leading HTML comment line). `cargo test --test docs` fails while they differ.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme_path = root / "README.md"
readme = readme_path.read_text()


def body(name: str) -> str:
    text = (root / name).read_text()
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("<!--") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines).rstrip("\n") + "\n"


def replace(match: re.Match) -> str:
    name = match.group(1)
    return f"<!-- BEGIN {name} -->\n{body(name)}<!-- END {name} -->"


new = re.sub(
    r"<!-- BEGIN (docs/[\w.-]+\.md) -->\n.*?<!-- END \1 -->",
    replace,
    readme,
    flags=re.S,
)
if new != readme:
    readme_path.write_text(new)
    print("README.md updated")
else:
    print("README.md already in sync")
sys.exit(0)
