"""Runbook parameters as Markdown, generated from the notebooks' parameters cells.

The parameters cell is the only declaration of a runbook's parameters; the tables in
``docs/runbooks.md`` are generated from it, never written by hand:

* :func:`markdown_table` renders one runbook's parameters (name, type, default as written in the cell,
  what the markers accept, help text) as a Markdown table (``opsbook show ID --markdown``);
* :func:`render_docs` replaces the text between ``<!-- params:RUNBOOK-ID -->`` and ``<!-- /params -->``
  in a Markdown document with that runbook's table.

``python -m opsbook.paramdocs docs/runbooks.md`` rewrites the file in place; with ``--check`` it only
says whether the file is up to date (exit 1 when it drifted). ``tests/unit/test_docs.py`` fails when
the docs drift from the notebooks.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any

from opsbook import catalog
from opsbook.parameters import ParamSpec

#: ``<!-- params:ID -->`` ... ``<!-- /params -->``: the generated block of runbook ID.
MARKER = re.compile(r"<!-- params:(?P<id>[^ >]*) -->(?P<body>.*?)<!-- /params -->", re.DOTALL)
_OPEN = re.compile(r"<!-- params:(?P<id>[^ >]*) -->")

_PATH_KINDS = {"any": "path of an existing file or folder", "file": "path of an existing file",
               "dir": "path of an existing folder", "yaml": "inline YAML, or the path of a YAML file",
               "name": "a name, or the path of a chart folder or .tgz"}


def _cell(text: str) -> str:
    """Text for a table cell: ``|`` escaped everywhere; outside code spans also ``<``, ``>``, ``&`` and
    ``*`` (so that ``<prefix>`` is shown, not taken for an HTML tag)."""
    parts = text.replace("\n", " ").split("`")
    if len(parts) % 2 == 0:  # an unbalanced backtick: no code spans
        parts = [text.replace("\n", " ").replace("`", "\\`")]
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            part = html.escape(part, quote=False).replace("*", "\\*")
        out.append(part.replace("|", "\\|"))
    return "`".join(out)


def _code(text: str) -> str:
    """``text`` as a code span in a table cell."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _literal(value: Any) -> str:
    """A default as it is written in a parameters cell: strings in double quotes, ``True``/``False``."""
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _num(x: float) -> str:
    return f"{x:g}"


def accepts(p: ParamSpec) -> str:
    """What the parameter's markers accept, in words (empty: any value of its type)."""
    out: list[str] = []
    if p.choices:
        out.append("one of " + ", ".join(_code(c) for c in p.choices))
    if p.k8s_name:
        out.append("Kubernetes name")
    if p.secret:
        out.append("secret reference (`env:`, `file:`, `k8s:`)")
    if p.minimum is not None and p.maximum is not None:
        out.append(f"{_num(p.minimum)} to {_num(p.maximum)}")
    elif p.minimum is not None:
        out.append(f"at least {_num(p.minimum)}")
    elif p.maximum is not None:
        out.append(f"at most {_num(p.maximum)}")
    if p.path:
        out.append(_PATH_KINDS[p.path])
    if p.required:
        out.append("required")
    if p.required_unless:
        alts = [f"the target's {_code(a[len('target.'):])}" if a.startswith("target.") else _code(a)
                for a in p.required_unless]
        out.append("required unless " + " or ".join(alts) + " is set")
    return "; ".join(out)


def markdown_table(runbook: catalog.Runbook | str, notebooks_dir: Path | None = None) -> str:
    """The parameters of ``runbook`` (a Runbook, or an id looked up in ``notebooks_dir``, default the
    catalogue) as a Markdown table, one row per parameter in the order the cell declares them. Ends
    with a newline."""
    rb = runbook if isinstance(runbook, catalog.Runbook) else catalog.get(
        runbook, notebooks_dir or catalog.catalogue_dir())
    lines = ["| name | type | default | accepts | help |", "|---|---|---|---|---|"]
    for p in rb.spec.params.values():
        lines.append(f"| {_code(p.name)} | {p.type} | {_code(_literal(p.default))} | {accepts(p)} | {_cell(p.help)} |")
    return "\n".join(lines) + "\n"


def render_docs(text: str, notebooks_dir: Path | None = None) -> str:
    """``text`` with each ``<!-- params:ID -->`` ... ``<!-- /params -->`` block replaced by the table of
    runbook ID (from ``notebooks_dir``, default the catalogue). An unknown runbook raises
    RunbookNotFound; a block that is not closed raises ValueError."""
    if len(_OPEN.findall(text)) != len(MARKER.findall(text)):
        raise ValueError("a <!-- params:ID --> block is not closed by <!-- /params -->")
    d = notebooks_dir or catalog.catalogue_dir()

    def repl(m: re.Match[str]) -> str:
        return f"<!-- params:{m.group('id')} -->\n\n{markdown_table(m.group('id'), d)}\n<!-- /params -->"

    return MARKER.sub(repl, text)


def documented(text: str) -> list[str]:
    """The runbook ids that have a generated block in ``text``, in order."""
    return [m.group("id") for m in MARKER.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m opsbook.paramdocs",
                                 description="Regenerate the parameter tables between <!-- params:ID --> and "
                                             "<!-- /params --> markers from the runbooks' parameters cells.")
    ap.add_argument("files", nargs="+", metavar="FILE.md")
    ap.add_argument("--notebooks", metavar="DIR", help="the runbook folder (default: the catalogue)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = ap.parse_args(argv)
    stale = 0
    for f in args.files:
        path = Path(f)
        old = path.read_text(encoding="utf-8")
        new = render_docs(old, Path(args.notebooks) if args.notebooks else None)
        if new == old:
            continue
        stale += 1
        if args.check:
            print(f"{path}: parameter tables differ from the notebooks (run python -m opsbook.paramdocs {path})",
                  file=sys.stderr)
        else:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: parameter tables regenerated")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
