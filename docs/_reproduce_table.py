"""Put the output of ``circuitlab reproduce --all --markdown`` in place (``make reproduce-table``).

    python docs/_reproduce_table.py OUTPUT_FILE

The summary table goes between the ``reproduce-table`` markers of README.md (each finding linking to its section
of the documentation's reproductions page) and of docs/reproductions.md; the per-finding sections (claim, published
and measured figures, rule, verdict) go between that page's ``reproduce-details`` markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split(output: str) -> tuple[list[str], str]:
    """The table's rows (header included) and the sections that follow it."""
    lines = output[output.index("| finding |"):].splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append(line)
    rest = output[output.index("| finding |"):]
    details = rest[rest.index("\n### "):].strip() if "\n### " in rest else ""
    return table, details


def linked(table: list[str], target: str) -> str:
    """The table with each finding id a link to its section (``target`` is the page, "" for the same page)."""
    return "\n".join(re.sub(r"^\| `([a-z0-9-]+)` \|", lambda m: f"| [`{m[1]}`]({target}#{m[1]}) |", row)
                     for row in table)


def replace(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} markers")
    return text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]


def main(path: str) -> None:
    table, details = split(Path(path).read_text(encoding="utf-8"))
    readme, page = ROOT / "README.md", ROOT / "docs" / "reproductions.md"
    readme.write_text(replace(readme.read_text(encoding="utf-8"), "reproduce-table",
                              linked(table, "docs/reproductions.md")), encoding="utf-8")
    text = replace(page.read_text(encoding="utf-8"), "reproduce-table", linked(table, ""))
    page.write_text(replace(text, "reproduce-details", details), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
