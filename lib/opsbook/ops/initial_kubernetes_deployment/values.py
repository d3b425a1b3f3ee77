"""values.yaml (the settings and overrides over the chart's defaults) and the manifests it renders."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsbook import safeyaml
from opsbook.errors import Invalid
from opsbook.ops.base import Code, Result, step
from opsbook.text import shorten

from .context import Context


def parse_overrides(text: str) -> dict[str, Any]:
    """Values overrides: a YAML mapping given inline, or the path of a YAML file (read within
    ``opsbook.safeyaml``'s size, nesting and alias limits)."""
    text = (text or "").strip()
    if not text:
        return {}
    candidate = Path(text).expanduser()
    try:
        is_file = candidate.is_file()
    except OSError:  # e.g. a one-line mapping longer than a file name may be
        is_file = False
    try:
        if "\n" not in text and not text.startswith("{") and (candidate.suffix in (".yaml", ".yml") or is_file):
            if not is_file:
                raise Invalid(f"values_overrides: file {candidate} does not exist")
            data = safeyaml.load_file(str(candidate), where=f"values_overrides file {candidate}")
        else:
            data = safeyaml.load(text, where="values_overrides")
    except safeyaml.YamlInputError as exc:
        raise Invalid(str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid(f"values_overrides must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _short(v: Any) -> str:
    return shorten(v, 80)


class Text(str):
    """A string shown as-is (not as a quoted repr) when it is a cell's last value."""

    def __repr__(self) -> str:
        return str(self)


@step("values", "Write values.yaml")
def write_values(ctx: Context) -> Result:
    """Write values.yaml: the settings (database Secret name) and the overrides, and show how the
    result differs from the chart's defaults (a table, and a unified diff in the record)."""
    import yaml

    s = ctx.settings
    overrides = deep_merge({"database": {"existingSecret": s.db_secret_name}}, parse_overrides(s.values_overrides))
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    ctx.values_file = ctx.workdir / "values.yaml"
    text = "# values.yaml written by opsbook runbook initial-kubernetes-deployment\n" + yaml.safe_dump(
        overrides, sort_keys=False)
    ctx.values_file.write_text(text)
    ctx.values = overrides
    defaults = ctx.helm.show_values(ctx.chart_ref, version=ctx.chart_pin)
    effective = deep_merge(defaults, overrides)
    flat_default, flat_effective = _flatten(defaults), _flatten(effective)
    rows = [{"value": k, "chart default": _short(flat_default.get(k, "(unset)")), "this deployment": _short(v)}
            for k, v in flat_effective.items() if flat_default.get(k, object()) != v]
    diff = "".join(difflib.unified_diff(yaml.safe_dump(defaults, sort_keys=True).splitlines(True),
                                        yaml.safe_dump(effective, sort_keys=True).splitlines(True),
                                        "chart defaults", "this deployment"))
    shown = text + ("\n# --- diff against the chart defaults ---\n" + diff if diff else "")
    summary = (f"values.yaml: {len(rows)} value(s) differ from the chart defaults" if rows else
               "values.yaml: no value differs from the chart defaults (only the database Secret's name is set)")
    return Result(summary=summary, rows=rows or None,
                  details={"values_file": str(ctx.values_file), "values_yaml": text, "diff": diff, "changes": rows},
                  value=Text(shown), show=[Code(shown, "yaml")])


@step("render", "Render the manifests")
def render_manifests(ctx: Context) -> Result:
    """``helm template`` with values.yaml: the objects the install will create (nothing touches the
    cluster). The full YAML goes into the record; the cell shows it too."""
    import yaml

    s = ctx.settings
    ctx.manifests = ctx.helm.template(s.release, ctx.chart_ref, version=ctx.chart_pin,
                                      values_files=ctx.values_files(), namespace=s.namespace)
    rows = [{"kind": m.get("kind"), "name": m["metadata"].get("name"), "apiVersion": m.get("apiVersion"),
             "namespace": m["metadata"].get("namespace") or s.namespace} for m in ctx.manifests]
    text = yaml.safe_dump_all(ctx.manifests, sort_keys=False)
    kinds: dict[str, int] = {}
    for m in ctx.manifests:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    return Result(summary=f"{len(ctx.manifests)} object(s): " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
                  rows=rows, details={"manifests": text}, value=Text(text), show=[Code(text, "yaml")])
