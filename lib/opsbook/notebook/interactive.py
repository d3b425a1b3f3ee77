"""Kernel-side support for walkthroughs in JupyterLab (never used headless).

``opsbook.start`` calls :func:`install` when it runs in an IPython kernel that is not under
``opsbook run``. That does two things:

- **Readable errors.** An IPython custom exception handler shows an exception raised by opsbook
  (``OpsbookError``) or inside a step (``run.step``/``run.change``) as a short message, with the
  traceback folded in a ``<details>`` element, plus a one-line error output, so that the cell still
  fails (JupyterLab's *Run All* stops there). Any other exception gets IPython's usual traceback.
  Headless runs never install it: papermill sees the ordinary error.
- **What ran.** Every rich output the kernel publishes (opsbook's banner, step outcomes and tables,
  pandas tables, matplotlib figures) and every error is kept with the execution count of the cell
  that produced it. ``run.summary()`` builds the record's notebook from that and the kernel's input
  history (:func:`executed_notebook`), so the record shows what the kernel actually ran even if the
  operator did not save the notebook. Printed text (stdout) is not captured.
"""

from __future__ import annotations

import html
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from opsbook.errors import OpsbookError

STEP_ATTR = "_opsbook_step"  # set on an exception raised inside a step: the step's title

# execution count -> outputs (nbformat dicts) published while that cell ran
_OUTPUTS: dict[int, list[dict[str, Any]]] = defaultdict(list)
_INSTALLED_ON: set[int] = set()


def shell() -> Any:
    """The IPython kernel shell this code runs in, or None (plain Python, a terminal IPython, tests)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    if ip is None or not hasattr(ip, "kernel"):
        return None
    return ip


def in_jupyter_server() -> bool:
    """This kernel was started by a Jupyter server for a notebook an operator has open (JupyterLab
    sets ``JPY_SESSION_NAME``); not by papermill, nbclient or nbmake."""
    import os

    return shell() is not None and bool(os.environ.get("JPY_SESSION_NAME"))


def current_cell(ip: Any) -> int:
    """The number of the cell running now (its index in the kernel's input history ``In``).
    ``ip.execution_count`` is not used: IPython versions differ on when they increment it."""
    return max(len(ip.user_ns.get("In", [])) - 1, 0)


def install(ip: Any) -> None:
    """Install the output capture and the readable-error handler (once per kernel)."""
    if id(ip) in _INSTALLED_ON:
        return
    _INSTALLED_ON.add(id(ip))
    pub = ip.display_pub
    original = pub.publish

    def publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            if not kwargs.get("update"):
                _OUTPUTS[current_cell(ip)].append(
                    {"output_type": "display_data", "data": dict(data or {}), "metadata": dict(metadata or {})})
        except Exception:  # never break the display over the record
            pass
        return original(data, metadata, *args, **kwargs)

    pub.publish = publish
    ip.set_custom_exc((Exception,), _handler)
    # a Result a cell echoes is one line (``Result._repr_pretty_``), and a cell ending with a step's
    # call echoes nothing (``notebook._quiet_echo``): headless runs get both too


def _handler(ip: Any, etype: type[BaseException], value: BaseException, tb: Any,
             tb_offset: int | None = None) -> list[str]:
    step = getattr(value, STEP_ATTR, None)
    if not (isinstance(value, OpsbookError) or step):
        ip.showtraceback((etype, value, tb), tb_offset=tb_offset)
        stb = ip.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
        _OUTPUTS[current_cell(ip)].append(_error_output(etype, value, [ip.InteractiveTB.stb2text(stb)]))
        return []
    html_text, plain = error_html(value, tb, step=step)
    from IPython.display import display

    display({"text/html": html_text, "text/plain": plain}, raw=True)
    line = f"{etype.__name__}: {first_line(value)}"
    # a one-line error output: the cell fails (Run All stops) without a long traceback
    ip._showtraceback(etype, value, [line])
    _OUTPUTS[current_cell(ip)].append(_error_output(etype, value, [line]))
    return []


def first_line(value: BaseException) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else ""


def error_html(value: BaseException, tb: Any, *, step: str | None = None) -> tuple[str, str]:
    """A short message, the full text and the traceback folded (``<details>``)."""
    from opsbook import secrets

    name = type(value).__name__
    what = f"Step “{step}” failed" if step else {
        "PreflightFailed": "A prerequisite is missing: the run stops here",
        "ParameterError": "Invalid parameters: nothing was run",
        "RunFailed": "The run failed",
    }.get(name, "opsbook stopped this cell")
    message = secrets.REDACTOR.redact(str(value).strip())
    detail = secrets.REDACTOR.redact("".join(traceback.format_exception(type(value), value, tb)))
    html_text = (
        "<div class='opsbook-error' style='border-left:4px solid #d32f2f;padding:4px 10px;"
        "background:rgba(211,47,47,0.06)'>"
        f"<p style='margin:2px 0'><strong>✗ {html.escape(what)}</strong></p>"
        f"<pre class='opsbook-error-message' style='white-space:pre-wrap;margin:4px 0'>"
        f"{html.escape(name)}: {html.escape(message)}</pre>"
        "<details class='opsbook-error-detail'><summary>details (traceback)</summary>"
        f"<pre style='font-size:85%'>{html.escape(detail)}</pre></details></div>")
    return html_text, f"{what}\n{name}: {message}"


def _error_output(etype: type[BaseException], value: BaseException, stb: list[str]) -> dict[str, Any]:
    return {"output_type": "error", "ename": etype.__name__, "evalue": first_line(value), "traceback": stb}


def notebook_path(default: Path) -> Path:
    """The notebook this kernel belongs to (jupyter_server sets ``JPY_SESSION_NAME`` to its path),
    else ``default`` (the runbook in the catalogue)."""
    import os

    name = os.environ.get("JPY_SESSION_NAME", "")
    if name.endswith(".ipynb"):
        p = Path(name)
        if not p.is_absolute():
            p = Path.cwd() / p.name
        if p.is_file():
            return p
    return default


def executed_notebook(source: Path, ip: Any, *, since: int) -> tuple[Any, dict[str, Any]]:
    """The notebook as the kernel ran it: the cells of ``source`` (as saved on disk) with, for each
    code cell, the outputs of its latest execution in this kernel; code run since execution
    ``since`` that matches no saved cell (edited and not saved, or typed in) is appended in a
    section of its own. Returns the notebook and a description for the manifest."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    history: list[str] = list(ip.user_ns.get("In", []))
    out_cache: dict[int, Any] = dict(ip.user_ns.get("Out", {}))
    now = current_cell(ip)
    latest: dict[str, int] = {}
    for i in range(1, min(len(history), now + 1)):
        latest[history[i].strip()] = i

    def outputs_of(n: int) -> list[dict[str, Any]]:
        outs = [nbformat.from_dict(o) for o in _OUTPUTS.get(n, [])]
        if n in out_cache:
            data, md = ip.display_formatter.format(out_cache[n])
            outs.append(nbformat.v4.new_output("execute_result", data=data, metadata=md, execution_count=n))
        return outs

    used: set[int] = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n: int | None = latest.get(cell.source.strip())
        if n is not None and n < since and "parameters" not in cell.metadata.get("tags", []):
            n = None  # run before this run started: it belongs to an earlier run in this kernel
        if n is None:
            cell.outputs, cell.execution_count = [], None
            continue
        used.add(n)
        cell.outputs, cell.execution_count = outputs_of(n), n
    extra = [n for n in range(max(since, 1), min(len(history), now + 1))
             if n not in used and history[n].strip() and latest.get(history[n].strip()) == n]
    if extra:
        nb.cells.append(nbformat.v4.new_markdown_cell(
            "## Executed in this session, not in the saved notebook\n\n"
            "Cells the kernel ran whose code is not in the notebook file as saved (edited and not saved, "
            "or typed in), in the order they ran."))
        for n in extra:
            cell = nbformat.v4.new_code_cell(history[n], execution_count=n)
            cell.outputs = outputs_of(n)
            nb.cells.append(cell)
    info = {"notebook_path": str(source), "cells_executed": len(used) + len(extra),
            "cells_not_in_saved_notebook": len(extra),
            "note": "notebook built from the kernel's input history and the rich outputs it published; "
                    "printed text is not included"}
    return nb, info

