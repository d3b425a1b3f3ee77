"""What ``ops`` functions return, so that the notebook API can record and show it.

``ops`` code imports only this module from the upper layers: it stays plain functions that take
their clients and return results, testable without a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "changed", "planned", "skipped", "failed"]
OUTCOMES: tuple[str, ...] = ("ok", "changed", "planned", "skipped", "failed")


@dataclass
class Result:
    """A step's result. ``outcome`` None lets the step wrapper decide (ok, or changed in apply mode)."""

    summary: str = ""
    outcome: Outcome | None = None
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] | None = None  # shown as a table
    value: Any = None  # what the cell gets back
    #: the run's main finding, when this step has it (a canary verdict, what an apply would change,
    #: what a check found): one line, shown after the run above the step table and in CI
    headline: str = ""

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r}: expected one of {', '.join(OUTCOMES)}")

    def one_line(self, limit: int = 100) -> str:
        """``(ok: 3 of 3 installed)``: the outcome and the summary, cut at a word."""
        from opsbook.display import shorten

        return f"({self.outcome or 'ok'}" + (f": {shorten(self.summary, limit)}" if self.summary else "") + ")"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """How IPython echoes a Result that is a cell's value: one line, not the dataclass's repr
        with every row and detail (``run.step`` has shown those already)."""
        p.text(self.one_line())


@dataclass(frozen=True)
class Check:
    """One pass/fail check with the reason, e.g. a preflight prerequisite."""

    name: str
    passed: bool
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
