"""Markdown for the generated parts of READMEs: tables, p-values, and the text between two markers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common import results


def table(frame: pd.DataFrame) -> str:
    """A DataFrame of cells as a Markdown table, columns left-aligned (pipes in cells escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join(":---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def p_value(p: float) -> str:
    """", p=0.012" (two significant digits), ", p<0.001", or "" where there is no test."""
    return "" if pd.isna(p) else f", p={p:.2g}" if p >= 0.001 else ", p<0.001"


def replace_between(path: Path, start: str, end: str, section: str) -> bool:
    """Replace the text from `start` to `end` (inclusive) with `section` (which holds both markers);
    append the section where the file has no markers. The rest of the file is left as it is, and a
    file that holds the section already is not written. Returns whether it was written."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if section in text:
        return False
    first, last = text.find(start), text.find(end)
    if first != -1 and last > first:
        text = text[:first] + section + text[last + len(end):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    results.atomic_write_text(path, text)
    return True
