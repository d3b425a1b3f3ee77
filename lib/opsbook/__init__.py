"""opsbook: executable notebook runbooks.

Cells import what they need from here::

    import opsbook
    run = opsbook.start("deploy-new-model", globals())

Attributes are loaded on first use, so that importing the package (and ``opsbook --help``) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["start", "Result", "Check"]


def __getattr__(name: str) -> Any:
    if name == "start":
        from opsbook.notebook import start

        return start
    if name in ("Result", "Check"):
        from opsbook import results

        return getattr(results, name)
    raise AttributeError(f"module 'opsbook' has no attribute {name!r}")
