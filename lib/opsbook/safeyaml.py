"""The one way opsbook reads YAML that a person gave it (``-p`` values, ``-f`` files, targets files,
values overrides): ``yaml.safe_load`` with limits, so that hostile or broken input is refused in
well under a second with one line instead of a traceback, a hang or an out-of-memory abort.

Limits (each can be lowered or raised per call):

* size: ``max_bytes`` (1 MiB) of input, checked before anything is parsed; a stream is read at
  most one byte past the limit;
* nesting: ``max_depth`` (100) levels, counted while the node tree is composed, before any
  Python object is built (a 5,000-deep ``[[[[...]]]]`` stops at level 101), and counted again with
  aliases expanded;
* aliases: the nodes that ``*alias`` references add when expanded, ``max_alias_nodes`` (10,000) in
  all. An anchor used for shared settings (``<<: *defaults``) is fine; a "billion laughs" (aliases of
  aliases of aliases...) is refused after a few levels, as is an alias of the collection it is in.

Errors are :class:`YamlInputError` (a ``UsageError``, so the CLI exits 2), one line naming ``where``
(the file or the parameter) and, for a limit, the limit (:class:`YamlLimitExceeded`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from opsbook.errors import UsageError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000


class YamlInputError(UsageError):
    """A YAML input that does not parse, or that exceeds a limit. The message is one line."""


class YamlLimitExceeded(YamlInputError):
    """A YAML input over a size, nesting or alias limit."""


def _at(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _LimitedComposer(Composer):
    """PyYAML's composer, counting nesting depth and alias expansion as it goes."""

    max_depth = MAX_DEPTH
    max_alias_nodes = MAX_ALIAS_NODES
    where = "YAML"
    peek_event: Callable[[], Any]  # from the parser (PyYAML's, or libyaml's CParser)

    def _start_counting(self) -> None:
        self._depth = 0
        self._alias_nodes = 0
        self._stats: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes when expanded, height when expanded)

    def _limit(self, what: str, mark: Any) -> YamlLimitExceeded:
        return YamlLimitExceeded(f"{self.where}: {what}{_at(mark)}; refused")

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            event = self.peek_event()
            if self._depth > self.max_depth:
                raise self._limit(f"YAML nested deeper than the limit of {self.max_depth} levels", event.start_mark)
            if isinstance(event, AliasEvent):
                target = self.anchors.get(event.anchor)
                if target is not None:
                    stats = self._stats.get(id(target))
                    if stats is None:  # the anchored collection is still being composed
                        raise self._limit(f"alias *{event.anchor} refers to a collection that contains it "
                                          "(recursive YAML is not accepted)", event.start_mark)
                    size, height = stats
                    self._alias_nodes += size
                    if self._alias_nodes > self.max_alias_nodes:
                        raise self._limit(f"YAML aliases expand to more than the limit of {self.max_alias_nodes} "
                                          "nodes (an alias bomb?)", event.start_mark)
                    if self._depth + height - 1 > self.max_depth:
                        raise self._limit(f"YAML nested deeper than the limit of {self.max_depth} levels once "
                                          f"alias *{event.anchor} is expanded", event.start_mark)
                return super().compose_node(parent, index)  # undefined alias: yaml's ComposerError
            node = super().compose_node(parent, index)
            if isinstance(node, SequenceNode):
                children: list[Node] = list(node.value)
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            size, height = 1, 1
            for child in children:
                s, h = self._stats[id(child)]
                size, height = size + s, max(height, h + 1)
            self._stats[id(node)] = (size, height)
            return node
        finally:
            self._depth -= 1


class _PyLoader(_LimitedComposer, yaml.SafeLoader):
    def __init__(self, stream: Any) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_counting()


_Loader: Any = _PyLoader
if yaml.__with_libyaml__:  # libyaml's parser for the events (2-3x faster), our composer on top
    from yaml._yaml import CParser

    class _CLoader(_LimitedComposer, CParser, SafeConstructor, Resolver):
        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_counting()

    _Loader = _CLoader


def _read(source: str | bytes | IO[Any], *, where: str, max_bytes: int) -> str | bytes:
    if isinstance(source, (str, bytes)):
        data = source
    else:
        try:
            data = source.read(max_bytes + 1)
        except OSError as exc:
            raise YamlInputError(f"{where}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise YamlInputError(f"{where}: not valid YAML: not UTF-8 text") from None
    size = len(data)
    if size <= max_bytes and isinstance(data, str) and size * 4 > max_bytes:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YamlLimitExceeded(f"{where}: larger than the limit of {_human(max_bytes)} of YAML; refused")
    return data


def _human(n: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def load(source: str | bytes | IO[Any], *, where: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
         max_alias_nodes: int = MAX_ALIAS_NODES) -> Any:
    """Parse one YAML document (like ``yaml.safe_load``) within the limits; ``where`` names the input
    in errors ("parameters file p.yaml", "parameter packages"). Raises :class:`YamlInputError`."""
    data = _read(source, where=where, max_bytes=max_bytes)
    loader = None
    try:
        loader = _Loader(data)  # bytes: the encoding is detected (and checked) here
        loader.where, loader.max_depth, loader.max_alias_nodes = where, max_depth, max_alias_nodes
        return loader.get_single_data()
    except YamlInputError:
        raise
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit (1000), met while it reads ahead
            raise YamlLimitExceeded(f"{where}: YAML nested deeper than the limit of {max_depth} levels; "
                                    "refused") from None
        what = "; ".join(_one_line(x) for x in (exc.context, exc.problem) if x) or "syntax error"
        raise YamlInputError(f"{where}: not valid YAML: {what}{_at(exc.problem_mark or exc.context_mark)}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{where}: not valid YAML: {_one_line(str(exc))}") from None
    except RecursionError:  # not expected within the depth limit; never a traceback
        raise YamlLimitExceeded(f"{where}: YAML nested too deeply to read; refused") from None
    except (ValueError, OverflowError) as exc:  # e.g. an int of 5,000 digits, a timestamp 2026-13-45
        raise YamlInputError(f"{where}: not valid YAML: {_one_line(str(exc))[:200]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str, *, where: str | None = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              max_alias_nodes: int = MAX_ALIAS_NODES) -> Any:
    """:func:`load` the file at ``path`` (read as bytes: YAML's own UTF-8/16 detection); reads at most
    ``max_bytes`` + 1 bytes, so a pipe (``-f <(...)``) works and ``/dev/zero`` is refused, not read."""
    where = where or f"YAML file {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise YamlInputError(f"{where}: {exc.strerror or exc}") from None
    return load(data, where=where, max_bytes=max_bytes, max_depth=max_depth, max_alias_nodes=max_alias_nodes)
