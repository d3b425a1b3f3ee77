"""How the command line prints: rich consoles, and tables that never cut what people copy."""

from __future__ import annotations

import os
from typing import Any


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        # piped into a file or a CI log: do not squeeze tables into 80 columns
        con = Console(stderr=stderr, highlight=False, width=200)
    return con


def _fitted_table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]], *, width: int,
                  drop_first: tuple[str, ...] = ()) -> Any:
    """A table that never cuts what people copy: a column marked whole (ids, statuses, times) is as
    wide as its longest value and never wraps; the others wrap. When even that does not fit in
    ``width``, the columns in ``drop_first`` are left out, in that order (the title says which)."""
    from rich.table import Table
    from rich.text import Text

    def cell_len(markup: str) -> int:
        return Text.from_markup(markup).cell_len

    names = [c for c, _ in columns]
    whole = {c for c, w in columns if w}
    need = {c: (max([cell_len(c)] + [cell_len(r[i]) for r in rows]) if c in whole else min(
        10, max([len(c)] + [cell_len(r[i]) for r in rows]))) for i, c in enumerate(names)}
    dropped: list[str] = []
    for c in drop_first:
        if sum(need[n] for n in names if n not in dropped) + 3 * (len(names) - len(dropped)) + 1 <= width:
            break
        dropped.append(c)
    keep = [i for i, c in enumerate(names) if c not in dropped]
    table = Table(title=title + (f" (not shown at this width: {', '.join(dropped)})" if dropped else ""))
    for i in keep:
        c = names[i]
        if c in whole:
            table.add_column(c, no_wrap=True, min_width=need[c])
        else:
            table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table
