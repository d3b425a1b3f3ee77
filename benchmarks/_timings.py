"""The timings table the benchmarks print: one row per operation with its time, target and verdict,
then the ratio against the baseline measured in the same process."""

from __future__ import annotations

from collections.abc import Sequence


def print_timings(title: str, rows: Sequence[tuple[str, float, float | None]], ratio_label: str,
                  ratio: float) -> None:
    """``rows``: (operation, seconds, target seconds or None). A rich table, or plain lines without rich."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(title)
        width = max(len(name) for name, _, _ in rows)
        for name, t, target in rows:
            verdict = "" if target is None else ("PASS" if t < target else "MISS")
            print(f"  {name:{width}s} {t:8.3f} s  {'' if target is None else f'< {target:g} s'}  {verdict}")
        print(f"  {ratio_label}: {ratio:.2f}x")
        return
    table = Table(title=title)
    table.add_column("operation")
    table.add_column("time (s)", justify="right")
    table.add_column("target", justify="right")
    table.add_column("result")
    for name, t, target in rows:
        verdict = "" if target is None else ("[green]PASS" if t < target else "[red]MISS")
        table.add_row(name, f"{t:.3f}", "" if target is None else f"< {target:g} s", verdict)
    table.add_row(ratio_label, f"{ratio:.2f}x", "", "")
    Console().print(table)
