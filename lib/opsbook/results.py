"""What ``ops`` functions return, so that the notebook API can record and show it.

A leaf module (like :mod:`opsbook.errors` and :mod:`opsbook.text`): ``ops`` returns these, the
notebook API records and shows them. Ops never display anything themselves: a rendered manifest, a
link or a plot goes into ``Result.show`` and the notebook API shows it under the step's line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "changed", "planned", "skipped", "failed"]
OUTCOMES: tuple[str, ...] = ("ok", "changed", "planned", "skipped", "failed")


@dataclass(frozen=True)
class Code:
    """A block of code or text to show (a manifest, a diff, a command)."""

    text: str
    lang: str = "yaml"


@dataclass(frozen=True)
class Link:
    """A link to show (an MLflow run, a dashboard)."""

    url: str
    label: str = "Open"


@dataclass(frozen=True)
class Figure:
    """A PNG image to show (a plot)."""

    png: bytes
    alt: str = ""


Shown = Code | Link | Figure


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
    #: what the notebook API shows under the step's line, in order (code, links, figures)
    show: list[Shown] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r}: expected one of {', '.join(OUTCOMES)}")

    def one_line(self, limit: int = 100) -> str:
        """``(ok: 3 of 3 installed)``: the outcome and the summary, cut at a word."""
        from opsbook.text import shorten

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
