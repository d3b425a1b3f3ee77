"""What a record is made of, shared by the headless runner and interactive runs.

``runner`` (``opsbook run``) and ``notebook.Run.summary`` (a walkthrough in JupyterLab) both build a
record the same way: a redactor from the registered secret values (plus every ``env:``/``file:``
reference they can resolve themselves), the executed notebook redacted, an HTML rendering, and a
manifest with the same fields. Keeping this in one module keeps the two audit trails identical.
"""

from __future__ import annotations

import contextlib
import html
import os
import platform
import re
import socket
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from opsbook import catalog, secrets
from opsbook.ids import utcnow
from opsbook.targets import Target

NOTEBOOK_NAME = "notebook.ipynb"
HTML_NAME = "notebook.html"


def git_commit(root: Path) -> str | None:
    """The commit of the project's checkout, read from .git without running git."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        return None
    return None


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("opsbook", "papermill", "nbclient", "nbconvert", "ipykernel", "jupyter_client"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def redactor_for(params: dict[str, Any], rb: catalog.Runbook, registered: Iterable[str]) -> secrets.Redactor:
    """A redactor for the values the kernel registered and, as a defence in depth, every ``env:`` and
    ``file:`` secret reference among the parameters that this process can resolve itself (in case a
    cell printed a value without registering it)."""
    red = secrets.Redactor(list(registered))
    for p in rb.spec:
        ref = params.get(p.name)
        if p.secret and isinstance(ref, str) and ref and ref.split(":", 1)[0] in ("env", "file"):
            with contextlib.suppress(Exception):
                sref = secrets.parse_ref(ref)
                if sref.scheme == "env" and sref.target in os.environ:
                    red.register(os.environ[sref.target])
                elif sref.scheme == "file":
                    red.register(secrets.read_file_ref(sref))  # regular files only, bounded (never a FIFO)
    return red


def html_exporter() -> Any:
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab")


#: the status of a record as shown in its header: (symbol, colour); text symbols, not emoji, so that
#: they render in any system font
STATUS_LOOK = {"succeeded": ("✓", "#2e7d32"), "failed": ("✗", "#c62828"), "aborted": ("⊘", "#ef6c00")}


def _duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def header_rows(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The facts at the top of a record, as (label, text) pairs, from its manifest: runbook, target,
    mode, operator, plan/approval, run id and timings (``header_html`` shows them; the text is the
    manifest's, which is redacted)."""
    params: Mapping[str, Any] = m["parameters"] if isinstance(m.get("parameters"), Mapping) else {}
    detail: Mapping[str, Any] = m["target_detail"] if isinstance(m.get("target_detail"), Mapping) else {}
    rows: list[tuple[str, str]] = []
    title = f" ({m['runbook_title']})" if m.get("runbook_title") else ""
    risk = f", risk {m['risk']}" if m.get("risk") else ""
    rows.append(("runbook", f"{m.get('runbook_id', '?')} v{m.get('runbook_version', '?')}{title}{risk}"))
    where = []
    if detail.get("kube_context") or detail.get("kubeconfig"):
        where.append(f"context {detail.get('kube_context') or '(current)'}")
    elif detail:
        where.append("no cluster (plan only)")
    namespace = params.get("namespace") or detail.get("namespace")
    if namespace:
        where.append(f"namespace {namespace}")
    production = " [PRODUCTION]" if detail.get("production") else ""
    tls = m["target_tls"] if isinstance(m.get("target_tls"), Mapping) else {}
    if tls.get("verify") is False:
        production += (f" [TLS verification off for cluster {tls.get('cluster', '?')} (insecure-skip-tls-verify): "
                       "the API server's identity was not checked]")
    rows.append(("target", f"{m.get('target', '?')}" + (f": {', '.join(where)}" if where else "") + production))
    mode = str(m.get("mode") or params.get("mode") or "plan")
    rows.append(("mode", "apply: changes were made" if mode == "apply" else f"{mode}: nothing was changed"))
    operator = str(m.get("operator") or "?") + (f"@{m['host']}" if m.get("host") else "")
    rows.append(("operator", operator + (" (interactive, JupyterLab)" if m.get("interactive") else "")))
    approval = m.get("approval") if isinstance(m.get("approval"), Mapping) else None
    if approval and approval.get("plan_run_id"):
        who = [f"planned by {approval['plan_operator']}" if approval.get("plan_operator") else "",
               f"approved by {approval['approver']}" if approval.get("approver") else "",
               f"at {approval['approved_at']}" if approval.get("approved_at") else ""]
        rows.append(("plan / approval", f"carries out plan {approval['plan_run_id']}"
                     + (f" ({' '.join(w for w in who if w)})" if any(who) else "")))
    elif mode == "apply":
        rows.append(("plan / approval", "no approved plan (not required for this runbook and target)"))
    else:
        rows.append(("plan / approval", f"this is a plan: to carry it out, `opsbook run {m.get('runbook_id', '?')} "
                                        f"--mode apply --approve {m.get('run_id', '?')}`"))
    rows.append(("run id", str(m.get("run_id") or "?")))
    rows.append(("started", str(m.get("started") or "?")))
    rows.append(("ended", str(m.get("ended") or "?") + (f" ({_duration(m.get('duration_seconds'))})"
                                                          if m.get("duration_seconds") is not None else "")))
    steps = [s for s in m.get("steps") or [] if isinstance(s, Mapping)]
    if steps:
        counts: dict[str, int] = {}
        for st in steps:
            counts[str(st.get("outcome"))] = counts.get(str(st.get("outcome")), 0) + 1
        rows.append(("steps", f"{len(steps)}: " + ", ".join(f"{n} {o}" for o, n in counts.items())))
    fc = m.get("failed_cell") if isinstance(m.get("failed_cell"), Mapping) else None
    if fc and (fc.get("code_cell") or fc.get("index") is not None):
        rows.append(("failing cell", f"code cell {fc.get('code_cell', '?')} (#{fc.get('index', '?')} of the runbook)"))
    if m.get("error"):
        rows.append(("error", str(m["error"])))
    return rows


def header_html(m: Mapping[str, Any]) -> str:
    """The header of a record's HTML page: its status and headline (what the run found), then
    ``header_rows``. Inline styles only: it must look right in any page it is put in."""
    from opsbook.cireport import run_headline

    status = str(m.get("status") or "unknown")
    symbol, colour = STATUS_LOOK.get(status, ("?", "#616161"))
    try:
        lines = run_headline(m)
    except Exception:  # never lose the page over its headline
        lines = []
    esc = html.escape
    out = [f"<section class='opsbook-record-header' data-status='{esc(status)}' style='border:1px solid #ddd;"
           f"border-left:6px solid {colour};border-radius:4px;padding:10px 14px;margin:8px 0 18px 0;"
           "font-family:system-ui, -apple-system, \"Segoe UI\", \"DejaVu Sans\", sans-serif'>",
           f"<div style='font-size:1.35em;font-weight:600'><span class='opsbook-status' style='color:{colour}'>"
           f"{symbol} {esc(status.upper())}</span> &middot; {esc(str(m.get('runbook_id', '')))} "
           f"<span style='font-weight:normal;color:#555'>{esc(str(m.get('mode') or ''))} run "
           f"{esc(str(m.get('run_id') or ''))}</span></div>"]
    for line in lines:
        out.append(f"<div class='opsbook-headline' style='font-size:1.1em;margin:6px 0 2px 0'>"
                   f"<strong>&#9654; {esc(line)}</strong></div>")
    out.append("<table class='opsbook-facts' style='border-collapse:collapse;margin-top:8px;font-size:0.95em'>")
    for label, text in header_rows(m):
        shown = esc(text)
        if label in ("run id", "plan / approval"):  # ids and commands are copied: monospace
            shown = re.sub(r"`([^`]*)`", r"<code>\1</code>", shown)
            if label == "run id":
                shown = f"<code>{shown}</code>"
        out.append(f"<tr><th style='text-align:left;padding:1px 14px 1px 0;vertical-align:top;white-space:nowrap;"
                   f"font-weight:600'>{esc(label)}</th><td style='text-align:left;padding:1px 0'>{shown}</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def _with_header(body: str, header: str) -> str:
    """``header`` at the top of the page: right after ``<main>`` (nbconvert's lab template), else
    after ``<body ...>``, else first."""
    for pattern in (r"<main[^>]*>", r"<body[^>]*>"):
        found = re.search(pattern, body)
        if found:
            return body[:found.end()] + "\n" + header + body[found.end():]
    return header + body


def _render_isolated(nb: Any, resources: dict[str, Any] | None, timeout: float = 180.0) -> str:
    """The HTML of ``nb`` rendered by nbconvert in a fresh interpreter (the notebook on stdin, the
    page on stdout): for a process whose own imports cannot be trusted any more (``runner``)."""
    import json
    import subprocess
    import sys

    import nbformat

    code = ("import json, sys\nimport nbformat\nfrom opsbook.records.record import html_exporter\n"
            "nb = nbformat.reads(sys.stdin.read(), as_version=4)\n"
            "body, _ = html_exporter().from_notebook_node(nb, resources=json.loads(sys.argv[1]) or None)\n"
            "sys.stdout.write(body)\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(resources or {})], input=nbformat.writes(nb),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the renderer exited with code {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def write_html(nb: Any, folder: Path, red: secrets.Redactor, exporter: Any = None,
               manifest: Mapping[str, Any] | None = None, *, isolated: bool = False) -> None:
    """Render the (already redacted) notebook to ``folder/notebook.html``, redacted again. With the
    record's ``manifest`` the page starts with its header (``header_html``: status, headline,
    runbook, target, mode, operator, plan/approval, run id, timings) and is titled after the run.
    The record is kept even if the rendering fails: ``html-error.txt`` then says why."""
    try:
        resources = None
        if manifest is not None:
            title = f"{manifest.get('runbook_id', 'run')} {manifest.get('run_id', '')}: {manifest.get('status', '')}"
            resources = {"metadata": {"name": re.sub(r"[^\w .:-]", "", title)}}  # ids and a status word
        if isolated:
            body = _render_isolated(nb, resources)
        else:
            body, _ = (exporter or html_exporter()).from_notebook_node(nb, resources=resources)
        if manifest is not None:
            body = _with_header(body, header_html(manifest))
        (folder / HTML_NAME).write_text(red.redact(body), encoding="utf-8")
    except Exception as exc:
        (folder / "html-error.txt").write_text(f"HTML rendering failed: {exc}\n")


def manifest(*, rb: catalog.Runbook, params: dict[str, Any], target: Target, run_id: str, operator: str,
             started: str, seconds: float, status: str, failed_cell: dict[str, Any] | None, error: str | None,
             approval: dict[str, Any] | None, steps: list[dict[str, Any]], evidence: list[dict[str, Any]],
             evidence_dropped: list[str] | None, red: secrets.Redactor,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a record (the archive adds the sha256 of every file), redacted."""
    doc: dict[str, Any] = {
        "run_id": run_id,
        "runbook_id": rb.id,
        "runbook_version": rb.version,
        "runbook_title": rb.title,
        "risk": rb.risk,
        "runbook_origin": rb.origin,
        "source_path": rb.path.name,
        "source_sha256": rb.sha256,
        "source_content_sha256": rb.content_sha256,
        "git_commit": git_commit(catalog.project_root(rb.path.parent)),
        "parameters": params,
        "mode": params.get("mode", "plan"),
        "target": target.name,
        "target_detail": target.model_dump(exclude={"description", "source"}),
        "target_source": target.source,
        "operator": operator,
        "host": socket.gethostname(),
        "started": started,
        "ended": utcnow(),
        "duration_seconds": round(seconds, 3),
        "status": status,
        "failed_cell": failed_cell,
        "error": red.redact(error) if error else None,
        "approval": approval,
        "steps": steps,
        "evidence": evidence,
        "evidence_dropped": evidence_dropped or None,
        "tools": tool_versions(),
    }
    if rb.id == UNDO_RUNBOOK and params.get("undo_of"):  # its plan and its apply both name what they take back
        doc["undoes"] = params["undo_of"]
    insecure = target.insecure_cluster()
    if insecure is not None:  # said once here, as in the banner, instead of urllib3's warning per request
        doc["target_tls"] = {"verify": False, "cluster": insecure}
    doc.update(extra or {})
    return red.redact_obj(doc)


#: the runbook ``opsbook undo`` runs (``notebooks/undo.ipynb``)
UNDO_RUNBOOK = "undo"


def changes_made(manifest: Mapping[str, Any]) -> list[str]:
    """What an apply changed, in order, from its step records (``undo`` of each change): one line per
    thing, e.g. ``db-secret: Secret/ml/db``; a change that cannot be undone says so."""
    out: list[str] = []
    for s in manifest.get("steps") or []:
        undo = s.get("undo")
        if s.get("kind") != "change" or not isinstance(undo, dict):
            continue
        sid = s.get("id") or s.get("title") or "?"
        if "none" in undo:
            out.append(f"{sid}: {s.get('summary') or s.get('title')} (cannot be undone: {undo['none']})")
            continue
        for e in undo.get("entries") or []:
            t = e.get("type")
            if t == "object":
                ns = e.get("namespace")
                what = f"{e.get('kind')}/{ns + '/' if ns else ''}{e.get('name')}"
                how = "created" if e.get("before") is None else "deleted" if e.get("after") is None else "changed"
                out.append(f"{sid}: {what} {how}")
            elif t == "helm":
                out.append(f"{sid}: helm release {e.get('namespace')}/{e.get('release')} "
                           + (f"installed (revision {e.get('after')})" if e.get("before") is None
                              else f"revision {e.get('before')} -> {e.get('after')}"))
            elif t == "alias":
                out.append(f"{sid}: alias {e.get('model')}@{e.get('alias')} "
                           f"{'v' + str(e['before']) if e.get('before') else '(unset)'} -> v{e.get('after')}")
            elif t == "none":
                out.append(f"{sid}: {e.get('what')} (cannot be undone: {e.get('why')})")
            else:  # a runbook's own undoer: what it names (incident response: ``op`` disabled/reenabled)
                ns = e.get("namespace")
                what = f"{e.get('kind') or t}/{ns + '/' if ns else ''}{e.get('name') or ''}".rstrip("/")
                out.append(f"{sid}: {what} {e.get('op') or 'changed'}")
    return out


def redact_evidence(folder: Path, red: secrets.Redactor) -> list[str]:
    """Redact every evidence file the kernel wrote; a binary file that holds a secret is dropped
    (it cannot be edited safely), and its name is returned so the manifest says so."""
    dropped: list[str] = []
    if not folder.is_dir():
        return dropped
    needles = [v.encode() for v in red.values()]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        try:
            text = data.decode()
        except UnicodeDecodeError:
            if any(n in data for n in needles):
                path.unlink()
                dropped.append(path.relative_to(folder).as_posix())
            continue
        clean = red.redact(text)
        if clean != text:
            path.write_text(clean)
    return dropped
