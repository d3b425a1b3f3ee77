"""The notebook API in-process, as a cell in JupyterLab would call it (no runner)."""

from __future__ import annotations

import json

import opsbook
import pytest
from opsbook import notebook
from opsbook.errors import ParameterError, PreflightFailed, RunFailed

from ..conftest import FIXTURE_NOTEBOOKS


@pytest.fixture
def ns(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(tmp_path / "outputs"))  # an apply writes ahead to the ledger
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID):
        monkeypatch.delenv(var, raising=False)
    return {"mode": "plan", "target": "local", "namespace": "ml-platform", "replicas": 2,
            "db_password": "env:OPSBOOK_FIXTURE_SECRET", "unrelated_variable": object()}


def test_start_validates_parameters_edited_by_hand(ns):
    ns["namespace"] = "Not_A_Name"
    with pytest.raises(ParameterError, match="namespace"):
        opsbook.start("passing", ns)


def test_plan_mode_never_calls_the_change(ns, capsys):
    run = opsbook.start("passing", ns)
    called = []
    run.change("Scale", lambda: called.append(1), plan=lambda: opsbook.Result(summary="would scale to 3"))
    run.change("Delete", lambda: called.append(2))
    assert called == []
    assert [(r.title, r.outcome) for r in run.records] == [("Scale", "planned"), ("Delete", "planned")]
    assert "would run" in run.records[1].summary
    assert "plan mode: Scale is not applied" in capsys.readouterr().out


def test_apply_mode_calls_the_change(ns):
    ns["mode"] = "apply"
    run = opsbook.start("passing", ns)
    assert run.change("Scale", lambda: "done") == "done"
    assert run.records[-1].outcome == "changed"


def test_failed_step_is_recorded_and_reraised(ns):
    run = opsbook.start("passing", ns)
    with pytest.raises(ZeroDivisionError):
        run.step("Divide", lambda: 1 / 0)
    assert run.records[-1].outcome == "failed" and "ZeroDivisionError" in run.records[-1].summary


def test_checks_and_summary(ns):
    run = opsbook.start("passing", ns)
    assert run.check("true", True) is True
    assert run.check("check object", lambda: opsbook.Check("c", False, "because")) is False
    assert run.check("raises", lambda: 1 / 0) is False
    with pytest.raises(RunFailed, match="check object: because; raises: ZeroDivisionError"):
        run.summary()


def test_preflight_stops_with_reasons(ns):
    run = opsbook.start("passing", ns)
    with pytest.raises(PreflightFailed, match="helm: not installed"):
        run.preflight([opsbook.Check("kubectl", True, "v1.32"), opsbook.Check("helm", False, "not installed")])
    assert run.records[-1].outcome == "failed"


def test_events_file_gets_redacted_outcomes(ns, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(notebook.ENV_SOURCE, str(FIXTURE_NOTEBOOKS / "passing.ipynb"))
    monkeypatch.setenv(notebook.ENV_EVENTS, str(events))
    monkeypatch.setenv(notebook.ENV_RUN_ID, "20261128T000000Z-abcdef")
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", "very-secret-value-42")
    run = opsbook.start("passing", ns)
    assert run.id == "20261128T000000Z-abcdef" and run.headless
    pw = run.secret("db_password")
    run.step("Leak", lambda: opsbook.Result(summary="pw=" + pw))
    text = events.read_text()
    assert "very-secret-value-42" not in text and "[REDACTED]" in text
    kinds = [json.loads(line)["event"] for line in text.splitlines()]
    assert kinds == ["start", "step"]


def test_interactive_apply_of_a_high_risk_runbook_needs_an_approved_plan(ns, tmp_path, monkeypatch):
    import subprocess
    import sys

    from opsbook.errors import ApprovalError

    outputs = tmp_path / "outputs"
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(outputs))
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", "fixture-secret-value")
    monkeypatch.delenv(notebook.ENV_APPROVED_PLAN, raising=False)
    ns["mode"] = "apply"
    with pytest.raises(ApprovalError, match="OPSBOOK_APPROVED_PLAN"):
        opsbook.start("highrisk", ns)
    # a plan made headless, then named in the walkthrough
    r = subprocess.run([sys.executable, "-m", "opsbook", "run", "highrisk", "--quiet", "--notebooks",
                        str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)], capture_output=True, text=True,
                       env={**__import__("os").environ})
    assert r.returncode == 0, r.stderr
    plan_id = json.loads((outputs / "ledger.jsonl").read_text().splitlines()[-1])["run_id"]
    monkeypatch.setenv(notebook.ENV_APPROVED_PLAN, plan_id)
    run = opsbook.start("highrisk", ns)
    assert run.approved_plan == plan_id and run.approval["source_checked"] is False
    ns["replicas"] = 5  # not what was planned
    with pytest.raises(ApprovalError, match="parameters differ"):
        opsbook.start("highrisk", ns)
    ns["replicas"] = 2
    monkeypatch.setenv(notebook.ENV_APPROVED_PLAN, "20990101T000000Z-abcdef")
    with pytest.raises(ApprovalError, match="no such plan record"):
        opsbook.start("highrisk", ns)


def test_interactive_plan_of_a_high_risk_runbook_needs_nothing(ns, monkeypatch):
    monkeypatch.delenv(notebook.ENV_APPROVED_PLAN, raising=False)
    run = opsbook.start("highrisk", ns)
    assert run.mode == "plan" and run.approved_plan is None


# --- records read at a glance (issue 16, section 4) ----------------------------------------------------------

def test_an_empty_list_of_rows_says_none_instead_of_an_empty_table(ns, capsys):
    run = opsbook.start("passing", ns)
    capsys.readouterr()
    run.step("Events", lambda: opsbook.Result(summary="0 event(s) in the last 30 min", rows=[]))
    out = capsys.readouterr().out
    assert "✓ Events: ok (0 event(s) in the last 30 min)\n(none)" in out
    run.step("No table", lambda: opsbook.Result(summary="nothing listed"))  # rows None: no table, no "(none)"
    assert "(none)" not in capsys.readouterr().out
    assert notebook._table_html([]) == "<p class='opsbook-empty'><em>(none)</em></p>"


def test_the_summary_table_cuts_summaries_at_a_word(ns, capsys):
    run = opsbook.start("passing", ns)
    words = " ".join(f"word{i:03d}" for i in range(40))  # 319 characters
    run.step("Long", lambda: opsbook.Result(summary=words))
    capsys.readouterr()
    run.summary()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "Long" in ln)
    shown = line.split("ok", 1)[1].split(None, 1)[1].strip()  # after the outcome and the seconds
    assert shown.endswith("…") and len(shown) <= notebook.SUMMARY_WIDTH
    assert all(w in words.split() for w in shown[:-1].split())  # whole words only
    assert run.records[0].summary == words  # the record keeps it whole


#: the characters below U+1F000 that Unicode gives an emoji presentation by default (Emoji_Presentation=Yes):
#: without an emoji font they show as empty boxes
_BMP_EMOJI = [(0x231A, 0x231B), (0x23E9, 0x23EC), (0x23F0, 0x23F0), (0x23F3, 0x23F3), (0x25FD, 0x25FE),
              (0x2614, 0x2615), (0x2648, 0x2653), (0x267F, 0x267F), (0x2693, 0x2693), (0x26A1, 0x26A1),
              (0x26AA, 0x26AB), (0x26BD, 0x26BE), (0x26C4, 0x26C5), (0x26CE, 0x26CE), (0x26D4, 0x26D4),
              (0x26EA, 0x26EA), (0x26F2, 0x26F3), (0x26F5, 0x26F5), (0x26FA, 0x26FA), (0x26FD, 0x26FD),
              (0x2705, 0x2705), (0x270A, 0x270B), (0x2728, 0x2728), (0x274C, 0x274C), (0x274E, 0x274E),
              (0x2753, 0x2755), (0x2757, 0x2757), (0x2795, 0x2797), (0x27B0, 0x27B0), (0x27BF, 0x27BF),
              (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55)]


def is_emoji(ch: str) -> bool:
    c = ord(ch)
    return c >= 0x1F000 or c == 0xFE0F or any(lo <= c <= hi for lo, hi in _BMP_EMOJI)


def test_outcome_symbols_are_text_not_emoji():
    from pathlib import Path

    from opsbook import cireport
    from opsbook.records import record as recording

    sets = [notebook._ICONS, cireport._ICON, cireport._STATUS_ICON,
            {k: v[0] for k, v in recording.STATUS_LOOK.items()}]
    dejavu = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    cmap = None
    if dejavu.is_file():
        fonttools = pytest.importorskip("fontTools.ttLib")
        cmap = fonttools.TTFont(str(dejavu)).getBestCmap()
    for icons in sets:
        assert len(set(icons.values())) == len(icons)  # one per outcome
        for symbol in icons.values():
            assert not any(is_emoji(ch) for ch in symbol), symbol
            if cmap is not None:  # an ordinary text font has them
                assert all(ord(ch) in cmap for ch in symbol), symbol


def test_a_result_echoes_as_one_line():
    from IPython.lib.pretty import pretty

    r = opsbook.Result(summary="6 of 6 installed " + "and a rather long tail " * 10, outcome="ok",
                       rows=[{"package": "x", "version": "1"}])
    text = pretty(r)
    assert text.startswith("(ok: 6 of 6 installed and") and text.endswith("…)") and "\n" not in text
    assert "rows" not in text and "Result(" not in text
    assert pretty(opsbook.Result(summary="no cluster", outcome="skipped")) == "(skipped: no cluster)"


def test_a_cell_ending_in_a_step_echoes_nothing_but_other_values_are_echoed():
    """The display hook of a real IPython shell: a cell whose last expression is ``run.step(...)`` or
    ``run.check(...)`` publishes no Out[n] (the step was shown already); any other value still is."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        notebook._quiet_echo(shell)
        notebook._quiet_echo(shell)  # once per shell
        published = []
        original = shell.displayhook.write_format_data
        shell.displayhook.write_format_data = lambda fmt, md=None: published.append(fmt.get("text/plain"))
        shell.user_ns["notebook"] = notebook
        shell.user_ns["Result"] = opsbook.Result
        shell.run_cell("r = Result(summary='0 found', outcome='skipped')", store_history=True)
        shell.run_cell("notebook._returned(r)", store_history=True)  # what run.step/check return
        shell.run_cell("notebook._returned(False)", store_history=True)
        shell.run_cell("r", store_history=True)  # the same object, echoed by a later cell: shown, one line
        shell.run_cell("1 + 1", store_history=True)
        assert published == ["(skipped: 0 found)", "2"]
        assert shell.user_ns["_"] == 2
        shell.displayhook.write_format_data = original
    finally:
        InteractiveShell.clear_instance()


def test_a_change_records_what_its_undo_needs_also_when_it_fails_halfway(ns, capsys):
    """Each change in apply mode gets a fresh journal; its entries go into the step's record (also
    when it raises after changing something), and the failed run's summary names them and the undo."""
    from opsbook.ops.base import change
    from opsbook.ops.journal import JOURNAL, irreversible

    @change("first", "First", undo=JOURNAL)
    def first(ctx):
        ctx.journal.irreversible("object A", "kept by the test")
        return opsbook.Result(summary="made A", outcome="changed")

    @change("half-way", "Half way", undo=JOURNAL)
    def half_way(ctx):
        ctx.journal.irreversible("object B", "kept by the test")
        raise RuntimeError("boom after B")

    @change("undeclared", "Undeclared")
    def undeclared(ctx):
        return opsbook.Result(summary="changed something", outcome="changed")

    @change("undeclared-failing", "Undeclared, failing")
    def undeclared_failing(ctx):
        raise RuntimeError("halfway, who knows what it did")

    @change("for-good", "For good", undo=irreversible("a restore replaces the rows"))
    def for_good(ctx):
        return opsbook.Result(summary="restored", outcome="changed")

    @change("nothing", "Nothing to do", undo=JOURNAL)
    def nothing(ctx):
        return opsbook.Result(summary="already so", outcome="ok")

    ns["mode"] = "apply"
    run = opsbook.start("passing", ns)
    run.do(first)
    with pytest.raises(RuntimeError, match="boom after B"):
        run.do(half_way)
    for fn in (undeclared, for_good, nothing):
        run.do(fn)
    with pytest.raises(RuntimeError):
        run.do(undeclared_failing)
    undo = {r.id: r.undo for r in run.records}
    assert undo["first"] == {"by": JOURNAL.name, "entries": [{"type": "none", "what": "object A",
                                                               "why": "kept by the test"}]}
    assert [r.outcome for r in run.records if r.id == "half-way"] == ["failed"]
    assert undo["half-way"]["entries"] == [{"type": "none", "what": "object B", "why": "kept by the test"}]  # its own
    assert undo["undeclared"] == {"none": "the step declares no undo"}
    assert undo["for-good"] == {"none": "a restore replaces the rows"}
    assert undo["nothing"] is None  # changed nothing: nothing to undo
    assert undo["undeclared-failing"] == {"none": "the step declares no undo"}  # it may have changed something
    capsys.readouterr()
    with pytest.raises(RunFailed):
        run.summary(record=False)
    out = capsys.readouterr().out
    assert "This apply changed 5 thing(s) before it stopped:" in out
    assert "half-way: object B (cannot be undone: kept by the test)" in out
    assert f"opsbook undo {run.id}" in out


def test_plan_mode_records_no_undo(ns):
    from opsbook.ops.base import change
    from opsbook.ops.journal import JOURNAL

    @change("c", "C", plan=lambda ctx: opsbook.Result(summary="would"), undo=JOURNAL)
    def c(ctx):
        raise AssertionError("not in plan mode")

    run = opsbook.start("passing", ns)
    run.do(c)
    assert run.records[-1].outcome == "planned" and run.records[-1].undo is None
