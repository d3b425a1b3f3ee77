"""A cell that ends with a step call does not echo its value as ``Out[n]``: the step showed it."""

from __future__ import annotations

from typing import Any

#: what the last ``run.step``/``change``/``check`` returned, and in which cell (``_returned``)
_LAST_RETURN: dict[str, Any] = {}


def _returned(value: Any) -> Any:
    """Note ``value`` as what the step wrapper returned in this cell, so that a cell ending with the
    call (``run.step("Python packages", ...)``, ``run.check(...)``) does not echo it as
    ``Out[5]: Result(...)``/``Out[17]: False``: the step showed its outcome, summary and table already.
    The value still goes to ``_`` and ``Out``, and a cell that assigns it gets it as always."""
    ip = _ipython()
    if ip is not None:
        _LAST_RETURN.update(cell=getattr(ip, "execution_count", None), value=value)
    return value


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _quiet_echo(ip: Any) -> None:
    """Make IPython's display hook skip the value ``_returned`` noted in the same cell (once per shell;
    any other value of a cell is echoed as usual). Never raises: at worst the value is echoed."""
    hook = getattr(ip, "displayhook", None)
    if hook is None or getattr(hook, "_opsbook_quiet", False):
        return
    try:
        original = hook.compute_format_data

        def compute_format_data(result: Any) -> Any:
            if (_LAST_RETURN.get("value") is result and "value" in _LAST_RETURN
                    and _LAST_RETURN.get("cell") == getattr(ip, "execution_count", None)):
                return {}, {}  # nothing to publish: no execute_result, no "Out[n]:"
            return original(result)

        hook.compute_format_data = compute_format_data
        hook._opsbook_quiet = True
    except Exception:  # an IPython without this hook: the values are echoed, one line for a Result
        pass
