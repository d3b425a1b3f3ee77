"""The documentation stays true: the README starts with the two commands, every relative link
resolves, the example targets file loads and names every field, and the per-runbook parameter tables
in docs/runbooks.md are what the notebooks declare (regenerate them with
``python -m opsbook.paramdocs docs/runbooks.md``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from opsbook import catalog, paramdocs, safeyaml, targets
from opsbook.errors import RunbookNotFound

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
EXAMPLE = ROOT / "targets.example.yaml"
RUNBOOKS_MD = DOCS / "runbooks.md"
MARKDOWN_FILES = [README, *sorted(DOCS.glob("*.md")), ROOT / "notebooks" / "README.md", ROOT / "outputs" / "README.md"]
TARGET_FIELDS = [f for f in targets.Target.model_fields if f not in ("name", "source")]


def _runbook_ids() -> list[str]:
    return [p.stem for p in catalog.discover(NOTEBOOKS)]


# ------------------------------------------------------------------------------------------ helpers

_FENCE = re.compile(r"^(```|~~~)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lowercased, punctuation other than
    '-' and '_' dropped, spaces made '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(path: Path) -> list[str]:
    prose = "\n".join(_prose_lines(path.read_text(encoding="utf-8")))
    prose = re.sub(r"`[^`\n]*`", "", prose)  # code spans: not links
    return _LINK.findall(prose)


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n") + len(heading) + 1
    nxt = re.search(rf"^{level} ", text[start:], re.MULTILINE)
    return text[start:start + nxt.start()] if nxt else text[start:]


# ------------------------------------------------------------------------------------------ README


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("# "), "the README opens with its title"
    assert lines[1] == "## The two commands", "the first thing after the title is how to run the two commands"
    assert lines[2].startswith("```"), "the two commands come first, as a code block"
    block = text.split("```")[1]
    assert re.search(r"^make demo\b", block.split("\n", 1)[1], re.MULTILINE)
    assert re.search(r"^make test\b", block.split("\n", 1)[1], re.MULTILINE)


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < 200, f"README.md has {n} lines; move reference material into docs/"


def test_readme_describes_what_make_demo_runs() -> None:
    """scripts/demo.sh is what `make demo` runs: the README names every runbook it runs, and how many runs."""
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:.*\n\t.*scripts/demo\.sh", make, re.MULTILINE)
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    runs = re.findall(r'^"\$OPSBOOK" run ([a-z0-9-]+)', demo, re.MULTILINE)
    section = _section(README.read_text(encoding="utf-8"), "## The two commands")
    assert runs, "demo.sh runs no runbook?"
    for rb in set(runs):
        assert f"`{rb}`" in section, f"make demo runs {rb}; the README's description of it does not say so"
    assert f"{len(runs)} runs" in section
    for verb in ("incident", "evidence", "history", "verify", "site"):
        if re.search(rf'^"\$OPSBOOK" {verb}\b', demo, re.MULTILINE):
            assert f"opsbook {verb}" in section, f"make demo runs `opsbook {verb}`; the README does not say so"


def test_readme_catalogue_lists_every_runbook_with_its_parameters_link() -> None:
    section = _section(README.read_text(encoding="utf-8"), "## Runbook catalogue")
    for rb in _runbook_ids():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{rb}` |")), None)
        assert row is not None, f"runbook {rb} is not in the README's catalogue"
        assert f"(docs/runbooks.md#{rb})" in row
        risk = catalog.get(rb, NOTEBOOKS).risk
        assert f"| {risk} |" in row, f"{rb}: the README's catalogue gives another risk than its notebook ({risk})"


def test_every_verb_is_documented() -> None:
    """Every `opsbook` verb (the parser's own list) appears in docs/running.md's command list."""
    import argparse

    from opsbook import cli

    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    running = (DOCS / "running.md").read_text(encoding="utf-8")
    missing = [v for v in sub.choices if f"opsbook {v}" not in running]
    assert not missing, f"docs/running.md does not show: {', '.join(missing)}"


# ------------------------------------------------------------------------------------------ links


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    problems = []
    for link in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, ...: not checked here
            continue
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        if not dest.exists():
            problems.append(f"{link}: {dest} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{link}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not problems, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_docs_are_linked_from_the_readme() -> None:
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in _links(README)}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs not linked from README.md: {unlinked}"


def test_slug_matches_github() -> None:
    assert _slug("What `verify` proves, and against whom") == "what-verify-proves-and-against-whom"
    assert _slug("Running a runbook inside the cluster (`--on-cluster`)") == \
        "running-a-runbook-inside-the-cluster---on-cluster"
    assert _slug("deploy-new-model") == "deploy-new-model"


# ------------------------------------------------------------------------------------------ targets


def test_targets_example_loads_through_the_real_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalog, "project_root", lambda start=None: tmp_path)  # no shared targets.yaml
    monkeypatch.setenv(targets.ENV_TARGETS, str(EXAMPLE))  # the example as the personal targets file
    usable, broken = targets.scan()
    mine = [b for b in broken if b.source == str(EXAMPLE)]
    assert not mine, [b.reason for b in mine]
    raw = safeyaml.load_file(str(EXAMPLE), where="targets.example.yaml")
    assert isinstance(raw, dict) and raw
    for name, fields in raw.items():
        tgt = targets.get(name)
        assert tgt.source == str(EXAMPLE)
        for field, value in fields.items():
            assert getattr(tgt, field) == value, f"{name}.{field}"
    assert any(t.production for n, t in usable.items() if n in raw), "the example shows a production target"


def test_targets_example_and_docs_name_every_field() -> None:
    raw = safeyaml.load_file(str(EXAMPLE), where="targets.example.yaml")
    every = next((fields for fields in raw.values() if set(TARGET_FIELDS) <= set(fields)), None)
    assert every is not None, (f"no target in targets.example.yaml sets every field; missing: "
                               f"{sorted(set(TARGET_FIELDS) - set().union(*(set(f) for f in raw.values())))}")
    text = EXAMPLE.read_text(encoding="utf-8")
    for field in TARGET_FIELDS:  # each field has a comment above it
        assert re.search(rf"#[^\n]*\n\s+{field}:", text), f"targets.example.yaml: {field} has no comment above it"
    table = (DOCS / "targets.md").read_text(encoding="utf-8")
    missing = [f for f in TARGET_FIELDS if f"| `{f}` |" not in table]
    assert not missing, f"docs/targets.md does not document: {missing}"


# ------------------------------------------------------------------------------------------ parameter tables


def test_runbook_parameter_tables_match_the_notebooks() -> None:
    current = RUNBOOKS_MD.read_text(encoding="utf-8")
    assert paramdocs.render_docs(current, NOTEBOOKS) == current, (
        "docs/runbooks.md differs from the notebooks' parameters cells: run "
        "`python -m opsbook.paramdocs docs/runbooks.md`")


def test_every_runbook_has_a_section_with_its_table() -> None:
    text = RUNBOOKS_MD.read_text(encoding="utf-8")
    documented = paramdocs.documented(text)
    assert sorted(documented) == sorted(_runbook_ids()), "docs/runbooks.md: one params block per runbook"
    anchors = _anchors(RUNBOOKS_MD)
    for rb in _runbook_ids():
        assert rb in anchors, f"docs/runbooks.md has no '## {rb}' section"
        section = _section(text, f"## {rb}")
        assert f"<!-- params:{rb} -->" in section
        for name in catalog.get(rb, NOTEBOOKS).spec.params:
            assert f"| `{name}` |" in section


def _notebook(tmp_path: Path, params: str, name: str = "doc-probe") -> Path:
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# probe"},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": params,
                     "outputs": [], "execution_count": None}],
          "metadata": {"opsbook": {"title": "Probe", "version": "1", "objective": "docs", "risk": "low"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / f"{name}.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_markdown_table_renders_what_the_cell_declares(tmp_path: Path) -> None:
    _notebook(tmp_path, "\n".join([
        'mode: str = "plan"  # plan or apply [choices: plan, apply]',
        'kind: str = "a|b"  # one of `x|y`, daily <prefix>-YYYY indices *not* logs-*',
        "replicas: int = 2  # pods [min: 1] [max: 10]",
        'password: str = ""  # a password [secret]',
        'report: str = ""  # a file [path: file]',
        'version: str = ""  # what to deploy [required-unless: tracking_uri, target.mlflow_uri]',
        'tracking_uri: str = ""  # registry',
        "flags: list = [\"a\"]  # flags",
        "on: bool = True  # on",
    ]) + "\n")
    table = paramdocs.markdown_table("doc-probe", tmp_path)
    rows = table.splitlines()
    assert rows[0] == "| name | type | default | accepts | help |"
    assert rows[2] == "| `mode` | str | `\"plan\"` | one of `plan`, `apply` | plan or apply |"
    assert rows[3] == ("| `kind` | str | `\"a\\|b\"` |  | one of `x\\|y`, daily &lt;prefix&gt;-YYYY indices "
                       "\\*not\\* logs-\\* |")
    assert rows[4] == "| `replicas` | int | `2` | 1 to 10 | pods |"
    assert "secret reference" in rows[5]
    assert "path of an existing file" in rows[6]
    assert "required unless `tracking_uri` or the target's `mlflow_uri` is set" in rows[7]
    assert '`["a"]`' in rows[9] and "`True`" in rows[10]
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 6 for row in rows)  # five cells a row, | escaped
    assert table.endswith("\n")
    # a Runbook object works as well as an id
    assert paramdocs.markdown_table(catalog.get("doc-probe", tmp_path)) == table


def test_render_docs_replaces_blocks_and_refuses_bad_ones(tmp_path: Path) -> None:
    _notebook(tmp_path, 'mode: str = "plan"  # plan or apply\n')
    text = "# Doc\n\n<!-- params:doc-probe -->\nstale table\n<!-- /params -->\n\nafter\n"
    out = paramdocs.render_docs(text, tmp_path)
    assert "stale table" not in out and out.endswith("<!-- /params -->\n\nafter\n")
    assert out == paramdocs.render_docs(out, tmp_path), "rendering is idempotent"
    assert paramdocs.documented(out) == ["doc-probe"]
    with pytest.raises(ValueError):
        paramdocs.render_docs("<!-- params:doc-probe -->\nno end\n", tmp_path)
    with pytest.raises(RunbookNotFound):
        paramdocs.render_docs("<!-- params:no-such-runbook -->\n<!-- /params -->\n", tmp_path)


def test_paramdocs_check_mode(tmp_path: Path) -> None:
    _notebook(tmp_path, 'mode: str = "plan"  # plan or apply\n')
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- params:doc-probe -->\n<!-- /params -->\n", encoding="utf-8")
    assert paramdocs.main([str(doc), "--notebooks", str(tmp_path), "--check"]) == 1
    assert paramdocs.main([str(doc), "--notebooks", str(tmp_path)]) == 0
    assert paramdocs.main([str(doc), "--notebooks", str(tmp_path), "--check"]) == 0
    assert "| `mode` |" in doc.read_text(encoding="utf-8")


def test_show_markdown_prints_the_table_the_docs_hold():
    import subprocess

    from opsbook.paramdocs import markdown_table

    from ..conftest import OPSBOOK

    r = subprocess.run([*OPSBOOK, "show", "deploy-new-model", "--markdown"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == markdown_table("deploy-new-model")
    assert "| `warmup_intervals` | int | `1` |" in r.stdout
