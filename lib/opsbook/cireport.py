"""``opsbook run --ci``: the run's output in the CI system's own format, plus the files pipelines read.

Formats (``--ci FORMAT``, or ``$OPSBOOK_CI``; bare ``--ci`` detects: ``GITHUB_ACTIONS=true`` ->
github, ``GITLAB_CI=true`` -> gitlab, else plain):

* **github**: workflow commands. One ``::group::`` holds the per-cell progress lines while the
  runbook executes, then one group per recorded step (its summary, table and details); an
  ``::error title=...::`` annotation for each failed check (a failed preflight: one per failed
  prerequisite), each failed step and the failed run itself; ``::warning::`` for warnings; a job
  summary in Markdown appended to ``$GITHUB_STEP_SUMMARY`` when that is set. Data are escaped as the
  runner parses them (``%``, CR, LF; in properties also ``:`` and ``,``), and text that comes from
  the record is printed between ``::stop-commands::TOKEN`` and ``::TOKEN::``, so that a runbook's
  output cannot issue workflow commands of its own.
* **gitlab**: collapsible sections (``\\e[0Ksection_start:TS:NAME[collapsed=true]\\r\\e[0KHeader`` ...
  ``\\e[0Ksection_end:TS:NAME\\r\\e[0K``), the same layout; failed steps open and in red, errors red.
* **plain**: the same layout with ``==`` headings and ``ERROR:``/``WARNING:`` lines.

No format draws a progress bar. Failed checks are read from the record's manifest after the run
(the steps that :mod:`opsbook.notebook` recorded), so what CI shows is what the record holds.

Files for pipelines, written after the record is sealed: ``--output-json FILE`` (:func:`run_result`,
schema :data:`RESULT_SCHEMA`: the run id an apply job passes to ``--approve``, the status, the exit
code and the record's location) and ``--junit FILE`` (:func:`junit_xml`: one test case per step and
check, and one for the run, which GitLab's ``artifacts:reports:junit`` and GitHub test reporters read).

Everything here writes to a stream it is given, or returns text: unit-testable without a run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from opsbook.errors import UsageError
from opsbook.notify import check_counts, failed_checks, failing_step
from opsbook.text import shorten

__all__ = ["ENV_CI", "FORMATS", "RESULT_SCHEMA", "GitHubReporter", "GitLabReporter", "Reporter", "choose",
           "detect", "escape_data", "escape_property", "job_url", "junit_xml", "make", "run_result",
           "step_summary_markdown", "write_files"]

FORMATS = ("github", "gitlab", "plain")
ENV_CI = "OPSBOOK_CI"
RESULT_SCHEMA = "opsbook.run-result/v1"
MAX_ANNOTATIONS = 10  # GitHub shows at most 10 error annotations per step
MAX_ROWS = 50
#: text symbols, one per outcome, that render in any font (CI logs and job summaries are read in
#: browsers and terminals without an emoji font too)
_ICON = {"ok": "✓", "changed": "●", "planned": "○", "skipped": "–", "failed": "✗"}
_STATUS_ICON = {"succeeded": "✓", "failed": "✗", "aborted": "⊘"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps \n and \t; drops ESC and CR
_XML_BAD = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FALSE = ("", "0", "false", "no", "off")


# -- choosing the format ------------------------------------------------------------------------------

def detect(env: Mapping[str, str] | None = None) -> str:
    """github under GitHub Actions, gitlab under GitLab CI, else plain."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS", "").lower() == "true":
        return "github"
    if env.get("GITLAB_CI", "").lower() == "true":
        return "gitlab"
    return "plain"


def choose(flag: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The format to use, or None for the ordinary terminal output. ``flag`` is ``--ci``'s value
    (``auto`` for a bare ``--ci``; None when not given, then ``$OPSBOOK_CI`` decides)."""
    env = os.environ if env is None else env
    value = flag
    if value is None:
        value = env.get(ENV_CI, "").strip().lower()
        if value in _FALSE:
            return None
        if value in ("1", "true", "yes", "on"):
            value = "auto"
    if value == "auto":
        return detect(env)
    if value not in FORMATS:
        raise UsageError(f"{ENV_CI}={value!r}: expected github, gitlab, plain, auto (or 1/0)")
    return value


def job_url(env: Mapping[str, str] | None = None) -> str | None:
    """A link to this CI job (GitHub Actions run, GitLab job), for notifications; None elsewhere."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS", "").lower() == "true" and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("GITLAB_CI", "").lower() == "true" and env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    return None


# -- escaping ---------------------------------------------------------------------------------------------

def escape_data(text: Any) -> str:
    """A workflow command's message: ``%`` ``\\r`` ``\\n`` as ``%25`` ``%0D`` ``%0A``."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: Any) -> str:
    """A workflow command's property value: as data, plus ``:`` and ``,`` as ``%3A`` and ``%2C``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _clean(text: Any) -> str:
    """Text from the record, safe to print in a CI log: no ESC or CR (no fake sections or colours)."""
    return _CONTROL.sub("", str(text if text is not None else ""))


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cell = {c: [shorten(_clean(r.get(c, "")), 80) for r in rows] for c in cols}
    widths = {c: max(len(str(c)), *(len(v) for v in cell[c])) for c in cols}
    out = ["  ".join(str(c).ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(cell[c][i].ljust(widths[c]) for c in cols).rstrip() for i in range(len(rows))]
    return out


# -- the result of a run, for --output-json and the reporters -----------------------------------------------

def run_result(outcome: Any) -> dict[str, Any]:
    """What a pipeline needs to know about a finished run (``--output-json``): its id (to pass to
    ``--approve``), status, exit code and record location. ``outcome`` is a ``runner.RunOutcome``."""
    m: Mapping[str, Any] = getattr(outcome, "manifest", None) or {}
    fc = getattr(outcome, "failed_cell", None) or None
    cell = None
    if fc:
        cell = {k: fc.get(k) for k in ("index", "code_cell", "ename", "evalue")}
        cell["source"] = (fc.get("source") or "").splitlines()[0][:200] if fc.get("source") else ""
    return {
        "schema": RESULT_SCHEMA,
        "run_id": outcome.run_id,
        "runbook_id": outcome.runbook_id,
        "runbook_version": m.get("runbook_version"),
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "mode": m.get("mode"),
        "target": m.get("target"),
        "record": str(outcome.record_dir) if outcome.record_dir else None,
        "started": m.get("started"),
        "ended": m.get("ended"),
        "approved_plan": (m.get("approval") or {}).get("plan_run_id"),
        "failed_cell": cell,
        "failing_step": failing_step(m),
        "error": getattr(outcome, "error", None),
        "checks": check_counts(m),
        "headline": run_headline(m),
    }


def run_headline(manifest: Mapping[str, Any]) -> list[str]:
    """What the run found, in one line or a few: the headlines its steps marked (a canary verdict),
    else what failed, changed or would change (``opsbook.runview``)."""
    from opsbook.runview import derived_headline, headlines

    lines = headlines(manifest) or [derived_headline(manifest)]
    return [ln for ln in lines if ln]


# -- reporters --------------------------------------------------------------------------------------------

class Reporter:
    """The plain format; subclasses change only how groups, errors and warnings are marked."""

    fmt = "plain"

    def __init__(self, stream: TextIO | None = None, *, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time, quiet: bool = False):
        self.stream = stream if stream is not None else sys.stdout
        self.env = os.environ if env is None else env
        self.clock = clock
        self.quiet = quiet
        self.runbook = "runbook"
        self._cells_open = False
        self._last_label: str | None = None

    # -- how a format marks things (overridden) --
    def _open(self, key: str, title: str, *, collapsed: bool = True, failed: bool = False) -> None:
        self._w(f"== {title}")

    def _close(self, key: str) -> None:
        pass

    def _body(self, lines: list[str]) -> None:
        for line in lines:
            self._w(line)

    def _error(self, title: str, message: str) -> None:
        self._w(f"ERROR: {title}: {message}")

    def format_warning(self, message: str) -> str:
        """One warning line in this format (the CLI prints notification warnings with it, on stderr)."""
        return f"WARNING: {_clean(message)}"

    def _status_line(self, text: str, status: str) -> None:
        self._w(text)

    def _w(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    # -- what the CLI calls --
    def banner(self, *, runbook: str, version: str, mode: str, target: str, approve: str | None = None) -> None:
        self.runbook = runbook
        from opsbook.text import safe_text  # notebook- and targets-file text: one line, no control codes

        self._w(f"opsbook run {runbook} v{safe_text(version, markup=False, oneline=True)}: mode {mode}, target "
                f"{safe_text(target, markup=False, oneline=True)}" + (f", approved plan {approve}" if approve else ""))

    def progress(self, event: str, index: int, total: int, label: str) -> None:
        """The runner's per-cell callback: a line when the runbook enters a new step (its heading),
        inside one collapsed group; the steps' outcomes follow as groups of their own."""
        if self.quiet or event != "start" or label.startswith("(markdown)") or label.startswith("(parameter"):
            return
        if label == self._last_label:
            return
        self._last_label = label
        if not self._cells_open:
            self._open("opsbook_cells", f"Executing {self.runbook} ({total} cells)", collapsed=True)
            self._cells_open = True
        self._w(f"[{index + 1}/{total}] {_clean(label)}")  # starts with "[": never a workflow command

    def end_progress(self) -> None:
        if self._cells_open:
            self._close("opsbook_cells")
            self._cells_open = False

    def report(self, result: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        """After the run: a group per step, an annotation per failure, the final status lines."""
        self.end_progress()
        for i, step in enumerate(manifest.get("steps") or [], start=1):
            failed = step.get("outcome") == "failed"
            title = (f"{_ICON.get(str(step.get('outcome')), '')} {step.get('kind')}: {_clean(step.get('title'))}: "
                     f"{step.get('outcome')} ({float(step.get('seconds') or 0):.1f} s)")
            self._open(f"opsbook_step_{i}", title, collapsed=not failed, failed=failed)
            self._body(self._step_lines(step))
            self._close(f"opsbook_step_{i}")
        self._annotations(result, manifest)
        status = str(result.get("status"))
        for line in result.get("headline") or []:
            self._w(f"headline: {_clean(line)}")
        self._status_line(f"{status} run {result.get('run_id')}", status)
        fc = result.get("failed_cell")
        if fc and (fc.get("index") is not None or fc.get("code_cell")):
            self._w(f"  failing cell: #{fc.get('index')} of the runbook (code cell {fc.get('code_cell')})")
            if fc.get("source"):
                self._w("  " + _clean(fc["source"])[:100])
        if result.get("error"):
            self._w(f"  error: {_clean(result['error'])}")
        self._w(f"  record: {result.get('record')}")
        self._summary(result, manifest)

    def _step_lines(self, step: Mapping[str, Any]) -> list[str]:
        lines = []
        if step.get("summary"):
            lines += _clean(step["summary"]).splitlines()
        rows = step.get("rows") or []
        if rows:
            lines += _table(rows[:MAX_ROWS])
            if len(rows) > MAX_ROWS:
                lines.append(f"({len(rows) - MAX_ROWS} more rows in the record)")
        details = {k: v for k, v in (step.get("details") or {}).items() if not (rows and k == "checks")}
        if details:
            text = json.dumps(details, sort_keys=True, default=str)
            lines.append("details: " + _clean(text if len(text) <= 2000 else text[:2000] + "…"))
        return lines or ["(no details recorded)"]

    def _annotations(self, result: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        run = f"{result.get('runbook_id')} run {result.get('run_id')}"
        errors: list[tuple[str, str]] = []
        for name, reason in failed_checks(manifest):
            errors.append((f"Check failed: {_clean(name)}", f"{_clean(reason) or '(no reason given)'} ({run})"))
        for step in manifest.get("steps") or []:
            if step.get("outcome") == "failed" and step.get("kind") not in ("check", "preflight"):
                errors.append((f"Step failed: {_clean(step.get('title'))}",
                               f"{_clean(step.get('summary')) or '(no reason given)'} ({run})"))
        status = result.get("status")
        if status != "succeeded":
            where = ""
            fc = result.get("failed_cell")
            if fc and fc.get("code_cell"):
                where = f" at code cell {fc['code_cell']}" + (f" ({_clean(fc['source'])[:80]})" if fc.get("source") else "")
            msg = f"{result.get('runbook_id')} {status}{where}"
            if result.get("error"):
                msg += f": {_clean(result['error'])}"
            msg += f"\nrun {result.get('run_id')}, record {result.get('record')}"
            errors.append((f"opsbook run {status}", msg))
        # the run's own error last but always shown: cut the per-check ones first
        if len(errors) > MAX_ANNOTATIONS:
            run_err = errors[-1] if status != "succeeded" else None
            kept = errors[: MAX_ANNOTATIONS - 2] if run_err else errors[: MAX_ANNOTATIONS - 1]
            dropped = len(errors) - len(kept) - (1 if run_err else 0)
            kept.append(("More failures", f"{dropped} more failed check(s)/step(s): see the step groups above "
                                          "and the record"))
            errors = kept + ([run_err] if run_err else [])
        for title, message in errors:
            self._error(title, message)
        if manifest.get("evidence_dropped"):
            self._w(self.format_warning("evidence file(s) dropped because they held a secret: "
                                        + ", ".join(map(str, manifest["evidence_dropped"]))))
        if status == "succeeded" and result.get("error"):
            self._w(self.format_warning(str(result["error"])))

    def _summary(self, result: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        pass


class GitHubReporter(Reporter):
    """GitHub Actions workflow commands, and the job summary."""

    fmt = "github"

    def _open(self, key: str, title: str, *, collapsed: bool = True, failed: bool = False) -> None:
        self._w(f"::group::{escape_data(title)}")

    def _close(self, key: str) -> None:
        self._w("::endgroup::")

    def _body(self, lines: list[str]) -> None:
        # record text is data, never commands: suspend command processing around it
        token = secrets.token_hex(8)
        self._w(f"::stop-commands::{token}")
        for line in lines:
            self._w(line)
        self._w(f"::{token}::")

    def _error(self, title: str, message: str) -> None:
        self._w(f"::error title={escape_property(title)}::{escape_data(message)}")

    def format_warning(self, message: str) -> str:
        return f"::warning::{escape_data(_clean(message))}"

    def _summary(self, result: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(step_summary_markdown(result, manifest))
        except OSError as exc:
            self._w(self.format_warning(f"could not write the job summary to $GITHUB_STEP_SUMMARY: {exc.strerror}"))


class GitLabReporter(Reporter):
    """GitLab CI collapsible sections and red errors."""

    fmt = "gitlab"
    RED, YELLOW, GREEN, RESET = "\x1b[31;1m", "\x1b[33;1m", "\x1b[32;1m", "\x1b[0m"

    def _open(self, key: str, title: str, *, collapsed: bool = True, failed: bool = False) -> None:
        opts = "[collapsed=true]" if collapsed else ""
        header = f"{self.RED}{title}{self.RESET}" if failed else title
        self._w(f"\x1b[0Ksection_start:{int(self.clock())}:{key}{opts}\r\x1b[0K{header}")

    def _close(self, key: str) -> None:
        self._w(f"\x1b[0Ksection_end:{int(self.clock())}:{key}\r\x1b[0K")

    def _error(self, title: str, message: str) -> None:
        lines = message.splitlines() or [""]
        self._w(f"{self.RED}ERROR: {title}: {lines[0]}{self.RESET}")
        for line in lines[1:]:
            self._w(f"{self.RED}  {line}{self.RESET}")

    def format_warning(self, message: str) -> str:
        return f"{self.YELLOW}WARNING: {_clean(message)}{self.RESET}"

    def _status_line(self, text: str, status: str) -> None:
        colour = {"succeeded": self.GREEN, "failed": self.RED}.get(status, self.YELLOW)
        self._w(f"{colour}{text}{self.RESET}")


def make(fmt: str, stream: TextIO | None = None, **kwargs: Any) -> Reporter:
    """The reporter for a format from :func:`choose`."""
    cls = {"github": GitHubReporter, "gitlab": GitLabReporter, "plain": Reporter}[fmt]
    return cls(stream, **kwargs)


# -- files: job summary, JUnit, result JSON ---------------------------------------------------------------

def _md(text: Any, limit: int = 200) -> str:
    """A Markdown table cell: one line, pipes escaped, no raw HTML."""
    s = shorten(_clean(text), limit)  # cut at a word, before escaping (an escape is never cut in two)
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def step_summary_markdown(result: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """The GitHub job summary: the run's facts, then every step and check with its outcome."""
    status = str(result.get("status"))
    out = [f"### {_STATUS_ICON.get(status, '')} opsbook: {_md(result.get('runbook_id'))} {status}", "",
           "| | |", "|---|---|",
           f"| Runbook | `{_md(result.get('runbook_id'))}` v{_md(result.get('runbook_version'))} |",
           f"| Target | {_md(result.get('target'))} |",
           f"| Mode | {_md(result.get('mode'))} |",
           f"| Status | {status} |",
           f"| Run id | `{_md(result.get('run_id'))}` |"]
    for line in result.get("headline") or []:
        out.append(f"| Headline | **{_md(line, 300)}** |")
    if result.get("approved_plan"):
        out.append(f"| Approved plan | `{_md(result.get('approved_plan'))}` |")
    checks = result.get("checks") or {}
    if checks.get("total"):
        out.append(f"| Checks | {checks.get('passed')} of {checks.get('total')} passed |")
    fs = result.get("failing_step")
    if fs:
        why = f": {_md(fs.get('summary'), 300)}" if fs.get("summary") else ""
        out.append(f"| Failing {_md(fs.get('kind'))} | {_md(fs.get('title'))}{why} |")
    if result.get("error"):
        out.append(f"| Error | {_md(result.get('error'), 500)} |")
    out.append(f"| Record | `{_md(result.get('record'), 500)}` |")
    steps = manifest.get("steps") or []
    if steps:
        out += ["", "#### Steps and checks", "", "| | kind | step | outcome | seconds | summary |",
                "|---|---|---|---|---|---|"]
        for s in steps:
            out.append(f"| {_ICON.get(str(s.get('outcome')), '')} | {_md(s.get('kind'))} | {_md(s.get('title'))} | "
                       f"{_md(s.get('outcome'))} | {float(s.get('seconds') or 0):.1f} | {_md(s.get('summary'))} |")
    bad = failed_checks(manifest)
    if bad:
        out += ["", "#### Failed checks", ""]
        out += [f"- **{_md(n)}**: {_md(r, 500) or '(no reason given)'}" for n, r in bad]
    return "\n".join(out) + "\n\n"


def _x(text: Any) -> str:
    return _XML_BAD.sub("", _clean(text) if text is not None else "")


def junit_xml(result: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """A JUnit XML report: one test case per step (a preflight: one per prerequisite) and one for
    the run, so that a run that failed outside any check is not reported green."""
    rb = str(result.get("runbook_id"))
    suite = ET.Element("testsuite", name=f"opsbook.{_x(rb)}", timestamp=_x(result.get("started") or ""))
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "mode", "target", "status", "record", "approved_plan"):
        if result.get(key) is not None:
            ET.SubElement(props, "property", name=key, value=_x(result.get(key)))
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    total_time = 0.0

    def case(name: str, seconds: float, *, failure: tuple[str, str, str] | None = None, skipped: str | None = None,
             out: str = "") -> None:
        nonlocal total_time
        tc = ET.SubElement(suite, "testcase", classname=f"opsbook.{_x(rb)}", name=_x(name), time=f"{seconds:.3f}")
        counts["tests"] += 1
        total_time += seconds
        if failure is not None:
            counts["failures"] += 1
            el = ET.SubElement(tc, "failure", message=_x(failure[0])[:1000], type=_x(failure[1]))
            el.text = _x(failure[2])
        elif skipped is not None:
            counts["skipped"] += 1
            ET.SubElement(tc, "skipped", message=_x(skipped)[:1000])
        if out:
            ET.SubElement(tc, "system-out").text = _x(out)

    for step in manifest.get("steps") or []:
        kind, title, outcome = step.get("kind"), str(step.get("title")), step.get("outcome")
        seconds = float(step.get("seconds") or 0)
        summary = str(step.get("summary") or "")
        rows = step.get("rows") or []
        if kind == "preflight" and rows:
            for r in rows:
                bad = str(r.get("status", "")).upper() == "FAIL"
                reason = str(r.get("reason", ""))
                case(f"preflight: {r.get('prerequisite', '?')}", 0.0,
                     failure=(reason or "prerequisite not met", "preflight", reason) if bad else None, out=reason)
            continue
        failure = (summary or f"{kind} failed", str(kind), summary) if outcome == "failed" else None
        case(f"{kind}: {title}", seconds, failure=failure, skipped=(summary or "skipped") if outcome == "skipped" else None,
             out=f"{outcome}: {summary}" if summary else str(outcome))
    status = str(result.get("status"))
    run_seconds = float(manifest.get("duration_seconds") or 0)
    if status == "succeeded":
        case(f"run: {rb}", run_seconds, out=f"succeeded; record {result.get('record')}")
    else:
        fc = result.get("failed_cell") or {}
        detail = "\n".join(x for x in (str(result.get("error") or ""),
                                       f"failing cell: code cell {fc.get('code_cell')}: {fc.get('source', '')}" if fc else "",
                                       f"record: {result.get('record')}") if x)
        case(f"run: {rb}", run_seconds, failure=(f"run {status}: {result.get('error') or ''}".strip(": "), status, detail))
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", "0")
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites", name="opsbook", tests=str(counts["tests"]), failures=str(counts["failures"]),
                      errors="0", time=f"{total_time:.3f}")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _write_atomic(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def write_files(result: Mapping[str, Any], manifest: Mapping[str, Any], *, junit: str | None = None,
                output_json: str | None = None) -> list[str]:
    """Write ``--output-json`` and ``--junit``; return a warning per file that could not be written
    (the run's exit code does not change for it)."""
    problems = []
    for flag, path, build in (("--output-json", output_json,
                               lambda: json.dumps(dict(result), indent=2, sort_keys=True) + "\n"),
                              ("--junit", junit, lambda: junit_xml(result, manifest))):
        if not path:
            continue
        try:
            _write_atomic(path, build())
        except OSError as exc:
            problems.append(f"{flag} {path}: not written: {exc.strerror or exc}")
    return problems
