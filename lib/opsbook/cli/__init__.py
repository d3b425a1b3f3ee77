"""The ``opsbook`` command line: parse, delegate, print. No logic lives here.

Imports are deferred to the verb that needs them, so that ``opsbook --help`` stays fast (no
papermill, no mlflow, no kubernetes).

Exit codes: 0 success, 1 the runbook failed (or verify found a problem), 2 invalid input,
130 interrupted.
"""

from __future__ import annotations

import sys

from opsbook.cli.parser import _bare_ci, _parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "_parser", "main"]


def _skip_unused_imports() -> None:
    """nbformat imports jsonschema, which imports ``rfc3987_syntax`` when it is installed (JupyterLab's
    jupyter-events pulls it in) and that compiles a lark grammar at import: 1.4 s of CPU in every
    ``opsbook`` command that reads or runs a notebook (5 s of wall time on a busy 2-CPU machine), for
    jsonschema's optional "iri" format checks, which no notebook schema uses. In this process only
    (never in a kernel or a Jupyter server), jsonschema is told it is not installed."""
    if "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    _skip_unused_imports()
    parser = _parser()
    args = parser.parse_args(_bare_ci(sys.argv[1:] if argv is None else list(argv)))
    if args.version:
        from importlib.metadata import version

        print(f"opsbook {version('opsbook')}")
        return EXIT_OK
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    from opsbook.cli import commands
    from opsbook.errors import OpsbookError, ParameterError, UsageError

    handler = getattr(commands, f"_cmd_{args.verb}")
    try:
        return int(handler(args))
    except ParameterError as exc:
        print(f"opsbook: {len(exc.problems)} invalid parameter(s); nothing was run:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.name}: got {problem.value}; {problem.expected}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OpsbookError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("opsbook: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
