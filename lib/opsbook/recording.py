"""What a record is made of, shared by the headless runner and interactive runs.

``runner`` (``opsbook run``) and ``notebook.Run.summary`` (a walkthrough in JupyterLab) both build a
record the same way: a redactor from the registered secret values (plus every ``env:``/``file:``
reference they can resolve themselves), the executed notebook redacted, an HTML rendering, and a
manifest with the same fields. Keeping this in one module keeps the two audit trails identical.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from collections.abc import Iterable
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


def write_html(nb: Any, folder: Path, red: secrets.Redactor, exporter: Any = None) -> None:
    """Render the (already redacted) notebook to ``folder/notebook.html``, redacted again. The record
    is kept even if the rendering fails: ``html-error.txt`` then says why."""
    try:
        body, _ = (exporter or html_exporter()).from_notebook_node(nb)
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
    doc.update(extra or {})
    return red.redact_obj(doc)


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
