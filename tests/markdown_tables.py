"""Reading the markdown tables the scripts print, for the tests."""
from __future__ import annotations


def md_rows(md: str, start: str | None = None) -> dict[str, list[str]]:
    """Label -> cells of the first markdown table in `md` (after the text `start`, if given); the header row is
    included, keyed by its first cell."""
    out, started = {}, False
    for line in (md[md.index(start):] if start else md).splitlines():
        if line.startswith("|"):
            started = True
            if not line.startswith("|---"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                out[cells[0]] = cells[1:]
        elif started:
            break
    return out
