"""What an operator sees in a terminal during and after ``opsbook run``.

During the run, like a test runner: the step being worked on (the runbook's own heading for it), then
one line per finished step with its outcome and seconds. After the run: the runbook's headline (what
it found: a canary verdict, what an apply would change) and the step table, then the status line
with the run id. ``--quiet`` keeps only the headline and the status. The CI formats (``--ci``) have
their own reporter (``opsbook.cireport``); this is the terminal's.

Everything shown here comes from the notebook or the kernel (titles, summaries): it goes through
``display.safe_text`` (no control characters reach the terminal, no rich markup is interpreted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opsbook.text import safe_text, shorten

#: outcome -> (word shown, rich style)
OUTCOME_STYLE = {"ok": "green", "changed": "yellow", "planned": "cyan", "skipped": "dim", "failed": "bold red"}
STATUS_STYLE = {"succeeded": "green", "failed": "bold red", "aborted": "yellow"}


def _first_line(text: Any, limit: int = 200) -> str:
    """The first non-empty line, cut at a word boundary (``display.shorten``)."""
    line = next((ln.strip() for ln in str(text or "").splitlines() if ln.strip()), "")
    return shorten(line, limit)


def step_line(step: Mapping[str, Any]) -> str:
    """One finished step as rich markup: outcome, seconds, title: summary."""
    outcome = str(step.get("outcome") or "")
    style = OUTCOME_STYLE.get(outcome, "")
    seconds = float(step.get("seconds") or 0.0)
    title = safe_text(step.get("title"), oneline=True)
    summary = safe_text(_first_line(step.get("summary"), 160), oneline=True)
    word = f"[{style}]{safe_text(outcome):<8}[/{style}]" if style else f"{safe_text(outcome):<8}"
    return f"  {word} {seconds:6.1f} s  {title}" + (f": {summary}" if summary else "")


def headlines(manifest: Mapping[str, Any]) -> list[str]:
    """The runbook's headline(s): what its steps marked as the run's main finding, in order."""
    return [str(s["headline"]) for s in manifest.get("steps") or [] if isinstance(s, Mapping) and s.get("headline")]


def derived_headline(manifest: Mapping[str, Any]) -> str:
    """For a run whose steps marked no headline: what failed, else what changed or would change,
    else how many checks passed."""
    steps = [s for s in manifest.get("steps") or [] if isinstance(s, Mapping)]
    if not steps:
        return ""
    failed = [str(s.get("title")) for s in steps if s.get("outcome") == "failed"]
    if failed:
        return f"{len(failed)} failed: " + ", ".join(failed)
    changed = [str(s.get("title")) for s in steps if s.get("outcome") == "changed"]
    planned = [str(s.get("title")) for s in steps if s.get("outcome") == "planned"]
    if changed:
        return f"changed: {', '.join(changed)}" + (f"; still to do: {', '.join(planned)}" if planned else "")
    if planned:
        return f"would change: {', '.join(planned)}"
    checks = [s for s in steps if s.get("kind") in ("check", "preflight")]
    return f"nothing to change; {len(checks)} check(s) passed" if checks else "nothing to change"


class RunView:
    """The terminal display of one run. ``callback`` is the runner's progress callback."""

    def __init__(self, con: Any, *, quiet: bool = False, live: bool | None = None):
        self.con = con
        self.quiet = quiet
        self.live = (con.is_terminal and os.environ.get("CI", "").lower() not in ("true", "1")) if live is None \
            else live
        self._last_label: str | None = None
        self._prog: Any = None
        self._task: Any = None
        self._steps = 0

    # -- during the run --------------------------------------------------------------------------
    def start(self) -> None:
        if self.quiet:
            return
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._prog = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.con, transient=True)
            self._task = self._prog.add_task("starting the kernel…", total=None)
            self._prog.start()
        else:
            self.con.print("starting the kernel…", markup=False)

    def callback(self, event: str, index: int, total: int, label: str) -> None:
        if self.quiet:
            return
        if event == "step":
            try:
                step = json.loads(label)
            except json.JSONDecodeError:
                return
            self._steps += 1
            self._print(step_line(step))
            return
        is_markdown = label.startswith("(markdown)")
        if self._prog is not None:
            if event == "start" and not is_markdown:
                self._prog.update(self._task, total=total, completed=index,
                                  description=safe_text(_first_line(label, 60) or f"cell {index + 1}", oneline=True))
            elif event == "complete":
                self._prog.update(self._task, total=total, completed=index + 1)
            return
        if event == "start" and not is_markdown and not label.startswith("(parameter") and label != self._last_label:
            self._last_label = label
            self.con.print(f"[{index + 1}/{total}] {safe_text(_first_line(label, 120), markup=False, oneline=True)}",
                           markup=False)

    def _print(self, text: str) -> None:
        (self._prog.console if self._prog is not None else self.con).print(text, highlight=False)

    def interrupting(self) -> None:
        """Ctrl-C was pressed: say so at once (stopping the kernel and writing the record take a moment)."""
        self._print("[yellow]interrupting… the kernel is stopped and the run's record written[/yellow]")

    def stop(self) -> None:
        if self._prog is not None:
            self._prog.stop()
            self._prog = None

    # -- after the run ---------------------------------------------------------------------------
    def report(self, *, status: str, run_id: str, manifest: Mapping[str, Any], record: Any,
               error: str | None = None, failed_cell: Mapping[str, Any] | None = None,
               out: Any = None) -> None:
        """The step table (unless each step was shown as it finished, or ``quiet``), the runbook's
        headline, the status line with the tally of outcomes, and the record."""
        from rich.table import Table

        out = out or self.con
        steps: Sequence[Mapping[str, Any]] = [s for s in manifest.get("steps") or [] if isinstance(s, Mapping)]
        if steps and not self.quiet and not self._steps:  # not already shown line by line as they finished
            table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            table.add_column("outcome", no_wrap=True)
            table.add_column("s", justify="right", no_wrap=True)
            table.add_column("step", overflow="fold", ratio=2)
            table.add_column("summary", overflow="fold", ratio=3)
            for s in steps:
                outcome = str(s.get("outcome") or "")
                style = OUTCOME_STYLE.get(outcome, "")
                table.add_row(f"[{style}]{safe_text(outcome)}[/{style}]" if style else safe_text(outcome),
                              f"{float(s.get('seconds') or 0):.1f}", safe_text(s.get("title"), oneline=True),
                              safe_text(_first_line(s.get("summary"), 240), oneline=True))
            out.print(table)
        counts: dict[str, int] = {}
        for s in steps:
            counts[str(s.get("outcome"))] = counts.get(str(s.get("outcome")), 0) + 1
        for line in headlines(manifest) or [derived_headline(manifest)]:
            if line:
                out.print(f"[bold]▶ {safe_text(line, oneline=True)}[/bold]", highlight=False)
        style = STATUS_STYLE.get(status, "")
        tally = ", ".join(f"{n} {o}" for o, n in counts.items())
        out.print(f"[{style}]{safe_text(status)}[/{style}] run {safe_text(run_id)}"
                  + (f" ({len(steps)} steps: {safe_text(tally)})" if steps else ""), highlight=False)
        if failed_cell:
            fc = failed_cell
            out.print(f"  failing cell: #{fc.get('index')} of the runbook (code cell {fc.get('code_cell')})",
                      highlight=False)
            if fc.get("source"):
                out.print("  " + safe_text(_first_line(fc["source"], 100), oneline=True), highlight=False)
        if error:
            out.print(f"  error: {safe_text(error)}", highlight=False)
        out.print(f"  record: {safe_text(record)}", highlight=False)


def view_for(con: Any, *, quiet: bool) -> tuple[RunView, Callable[[str, int, int, str], None] | None]:
    view = RunView(con, quiet=quiet)
    return view, (None if quiet else view.callback)
