"""Secret references and the redactor.

Parameters never carry secret values, only references:

* ``env:NAME``             the environment variable NAME of the process that runs the notebook
* ``file:PATH``            the contents of a file (trailing newline stripped)
* ``k8s:NS/SECRET/KEY``    key KEY of the Kubernetes Secret SECRET in namespace NS

A reference is resolved inside the library at the moment it is used. Every resolved value is
registered with the process's :class:`Redactor`; when a run is executed by ``opsbook run`` the
kernel also appends the value to a private file in the run's staging directory (mode 0600, outside
``outputs/``, deleted after the run) so that the runner can redact the executed notebook before it
is archived. No record, log line or HTML page may contain a registered value.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbook.errors import SecretError

ENV_SECRETS_FILE = "OPSBOOK_SECRETS_FILE"
MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would redact common words; they are refused at resolve time

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Names of parameters whose values are masked when shown, even if not declared [secret].
SECRETISH_NAME = re.compile(r"(passw|secret|token|api[_-]?key|private[_-]?key|credential|auth)", re.I)

# Values that are credentials whatever the parameter is called.
_LOOKS_SECRET = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),  # Slack tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b"),  # JWT
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # URL with user:password@
]


@dataclass(frozen=True)
class SecretRef:
    scheme: str  # env | file | k8s
    target: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    @property
    def k8s_parts(self) -> tuple[str, str, str]:
        ns, name, key = self.target.split("/", 2)
        return ns, name, key


def parse_ref(text: str) -> SecretRef:
    """Parse a secret reference, raising ``ValueError`` with what was expected."""
    scheme, sep, target = text.partition(":")
    if not sep or scheme not in ("env", "file", "k8s"):
        raise ValueError("it does not start with env:, file: or k8s:")
    if scheme == "env" and not _ENV_NAME.match(target):
        raise ValueError("env:NAME with NAME a valid environment variable name")
    if scheme == "file" and not target.strip():
        raise ValueError("file:PATH with a non-empty PATH")
    if scheme == "k8s":
        parts = target.split("/")
        if (len(parts) != 3 or not _DNS_LABEL.match(parts[0]) or not _DNS_SUBDOMAIN.match(parts[1])
                or not _SECRET_KEY.match(parts[2])):
            raise ValueError("k8s:NAMESPACE/SECRET/KEY with valid Kubernetes names")
    return SecretRef(scheme, target)


def is_ref(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_ref(text)
    except ValueError:
        return False
    return True


def looks_secret(value: Any) -> bool:
    """True when a literal value looks like a credential (private key, cloud or API token...)."""
    return isinstance(value, str) and any(p.search(value) for p in _LOOKS_SECRET)


def mask(value: Any) -> str:
    """How a secret-looking value is shown in an error: never any of its characters."""
    n = len(str(value))
    return f"'****' ({n} chars)"


def _b64_forms(data: bytes) -> set[str]:
    """Standard and URL-safe base64 of ``data`` at each of the three byte offsets it can have inside a
    longer encoded stream (HTTP Basic ``base64(b"user:" + value)`` puts it at offset 2). For offset k,
    ``k`` filler bytes + ``data`` are encoded and only the characters that depend on ``data`` alone are
    kept: not the leading ones that mix in the filler, nor the trailing one that mixes in whatever
    follows. At offset 0 the encoding of ``data`` on its own (with and without padding) is kept too."""
    out: set[str] = set()
    for k in range(3):
        first, end = -(-8 * k // 6), 8 * (k + len(data)) // 6  # chars wholly inside data's bits
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(bytes(k) + data).decode()
            out.add(text[first:end])  # >= 4 chars for a 4-byte value; shorter ones are not kept
            if k == 0:
                out.update((text, text.rstrip("=")))
    return out


def _quoted_forms(value: str) -> set[str]:
    """``value`` as it appears inside a quoted string: Python ``repr``/``ascii`` (alone, and inside a
    string holding both quote kinds, where ``'`` is escaped), ``bytes`` repr, and JSON (ASCII or not;
    with ``/`` escaped; Go's encoder, as in Kubernetes API errors, also escapes ``<``, ``>`` and ``&``)."""
    both = "'\""  # a prefix holding both quote kinds: repr escapes ' (never ") and uses ' delimiters
    data = value.encode()
    js = json.dumps(value)[1:-1]
    return {repr(value)[1:-1], repr(both + value)[4:-1], ascii(value)[1:-1], ascii(both + value)[4:-1],
            repr(data)[2:-1], repr(both.encode() + data)[5:-1],
            js, json.dumps(value, ensure_ascii=False)[1:-1], js.replace("/", "\\/"),
            js.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")}


_MARKUP_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def _html_forms(text: str) -> set[str]:
    """``text`` in HTML: ``html.escape`` with and without quotes, Jinja/markupsafe's numeric quote
    entities (nbconvert's templates), and the same with non-ASCII characters as numeric entities."""
    out = {html.escape(text), html.escape(text, quote=False), text.translate(_MARKUP_ESCAPES)}
    return out | {f.encode("ascii", "xmlcharrefreplace").decode() for f in out}


_PCT = re.compile(r"%([0-9A-F]{2})")


def _url_forms(value: str) -> set[str]:
    """``value`` URL-encoded: ``quote`` (``safe=''`` and ``'/'``), ``quote_plus`` (spaces as ``+``)
    and JavaScript's ``encodeURIComponent``. Their ``%XX`` are matched in either case."""
    q, qp = urllib.parse.quote, urllib.parse.quote_plus
    return {q(value, safe=""), q(value, safe="/"), qp(value, safe=""), qp(value, safe="/"),
            q(value, safe="!'()*~")}


Atoms = tuple[str, ...]  # a form as regexes of one character each: re.escape(c), or "[aA]" for either case


def _any_case(c: str) -> str:
    return f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c)


def _pct_atoms(form: str) -> Atoms:
    """A URL-encoded form whose ``%XX`` escapes match in upper or lower case."""
    either = {i for m in _PCT.finditer(form) for i in (m.start(1), m.start(1) + 1)}
    return tuple(_any_case(c) if i in either else re.escape(c) for i, c in enumerate(form))


def _trie_regex(alternatives: list[Atoms]) -> str:
    """One regex matching the longest of ``alternatives`` that matches at a position, written as a
    trie (shared prefixes once, then one branch per next character), so that the regex engine tries a
    handful of branches at each position instead of every form of every value. Branches start with
    distinct literal characters (an either-case atom is split in two where branches start), so they
    exclude each other and the greedy ``?`` after a shorter form's end makes the longest match win."""
    shortest = min(len(a) for a in alternatives)
    n = 0
    while n < shortest and all(a[n] == alternatives[0][n] for a in alternatives):
        n += 1
    head = "".join(alternatives[0][:n])
    tails = [a[n:] for a in alternatives]
    ends_here = any(not t for t in tails)
    branches: dict[str, list[Atoms]] = {}
    for t in tails:
        if t:
            for c in (t[0][1:3] if t[0].startswith("[") else [t[0]]):
                branches.setdefault(c, []).append(t[1:])
    if not branches:
        return head
    body = "|".join(c + _trie_regex(rest) for c, rest in sorted(branches.items()))
    return head + ("(?:" + body + ")" + ("?" if ends_here else "") if len(branches) > 1 or ends_here
                   else body)


class Redactor:
    """Replaces every registered value, in every form a record may hold it, with ``[REDACTED]``.

    The forms of a value (and of the value stripped of surrounding whitespace): itself; standard and
    URL-safe base64 at the three byte offsets (the characters that depend on the value alone); hex in
    either case; URL-encoded (``%XX`` in either case); inside a Python/JSON quoted string; HTML-escaped
    or as numeric entities; and a quoted form HTML-escaped, or an HTML-escaped one quoted. Forms shorter
    than ``MIN_SECRET_LENGTH`` are not kept.
    """

    def __init__(self, values: list[str] | None = None):
        self._secrets: list[str] = []  # the values as registered
        self._values: set[str] = set()  # every literal form (what ``values()`` returns)
        self._alternatives: set[Atoms] = set()  # every form, as one regex atom per character
        self._compiled: re.Pattern[str] | None = None  # built on first use after a change
        for v in values or []:
            self.register(v)

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> list[str]:
        """Every registered form as a literal string (hex in both cases, ``%XX`` in both cases), for
        scanning binary data for any of them."""
        return sorted(self._values)

    def registered(self) -> list[str]:
        """The values as registered (not their encoded forms): what another redactor is built from."""
        return list(self._secrets)

    def register(self, value: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH or value in self._secrets:
            return
        self._secrets.append(value)
        forms: set[str] = set()  # matched as they are
        url: set[str] = set()  # %XX in either case
        hexes: set[str] = set()  # in either case
        for v in {value, value.strip()}:
            if len(v) < MIN_SECRET_LENGTH:
                continue
            data = v.encode()
            quoted = _quoted_forms(v)
            forms |= {v} | quoted | _b64_forms(data)
            for text in {v} | quoted:
                forms |= _html_forms(text)  # e.g. the repr of a dict, in an HTML table
            for text in _html_forms(v):
                forms |= _quoted_forms(text)  # e.g. an HTML snippet held in a dict, shown as its repr
            forms |= {"".join(f"&#{ord(c)};" for c in v), "".join(f"&#x{ord(c):x};" for c in v)}
            url |= _url_forms(v)
            hexes.add(data.hex())
        url -= forms
        alternatives = {tuple(re.escape(c) for c in f) for f in forms if len(f) >= MIN_SECRET_LENGTH}
        alternatives |= {_pct_atoms(f) for f in url if len(f) >= MIN_SECRET_LENGTH}
        alternatives |= {tuple(_any_case(c) for c in h) for h in hexes}
        if alternatives <= self._alternatives:
            return
        self._alternatives |= alternatives
        self._values |= {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
        self._values |= {g for f in url if len(f) >= MIN_SECRET_LENGTH
                         for g in (f, _PCT.sub(lambda m: "%" + m.group(1).lower(), f))}
        self._values |= {g for h in hexes for g in (h, h.upper())}
        self._compiled = None

    def _pattern(self) -> re.Pattern[str] | None:
        if self._compiled is None and self._alternatives:
            try:
                self._compiled = re.compile(_trie_regex(list(self._alternatives)))
            except (RecursionError, re.error):  # a pathological set of forms: one flat alternation
                # longest first, so that a form containing another is replaced whole
                ordered = sorted(self._alternatives, key=lambda a: (-len(a), a))
                self._compiled = re.compile("|".join("".join(a) for a in ordered))
        return self._compiled

    def redact(self, text: str) -> str:
        pattern = self._pattern()
        if pattern is None or not isinstance(text, str):
            return text
        return pattern.sub(MASK, text)

    def redact_obj(self, obj: Any, *, skip_keys: frozenset[str] = frozenset({"image/png", "image/jpeg"})) -> Any:
        """Redact every string inside a JSON-like structure (a notebook, a manifest)."""
        if self._compiled is None and self._pattern() is None:
            return obj
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, list):
            return [self.redact_obj(x, skip_keys=skip_keys) for x in obj]
        if isinstance(obj, dict):
            return {k: (v if k in skip_keys else self.redact_obj(v, skip_keys=skip_keys)) for k, v in obj.items()}
        return obj


# The process-wide redactor: values resolved in this process (e.g. the notebook's kernel).
REDACTOR = Redactor()


def register(value: str) -> None:
    """Register a secret value with this process's redactor and, under ``opsbook run``, the runner's."""
    REDACTOR.register(value)
    path = os.environ.get(ENV_SECRETS_FILE)
    if path and isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(value) + "\n").encode())
        finally:
            os.close(fd)


def read_registered(path: Path) -> list[str]:
    """The values a kernel registered (runner side)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


K8sReader = Callable[[str, str, str], str]

MAX_SECRET_BYTES = 64 * 1024  # a larger value is not a password, key or token: it is refused


def read_file_ref(sref: SecretRef) -> str:
    """The value of a ``file:`` reference (trailing newline stripped), read safely: only a regular file
    (never a FIFO, device such as /dev/zero, socket or directory, which could block or never end) and
    at most MAX_SECRET_BYTES. Raises SecretError naming the reference, never the value."""
    p = Path(sref.target).expanduser()
    kinds = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK:
             "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}
    try:
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open() does not block;
            # the fstat below then refuses it
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                data = b""
                if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_SECRET_BYTES:
                    chunks, n = [], 0
                    while n <= MAX_SECRET_BYTES:
                        chunk = os.read(fd, MAX_SECRET_BYTES + 1 - n)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        n += len(chunk)
                    data = b"".join(chunks)
            finally:
                os.close(fd)
    except OSError as exc:
        raise SecretError(f"secret reference {sref}: cannot read {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = kinds.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise SecretError(f"secret reference {sref}: {p} is {kind}; a file: reference must name a regular file")
    if st.st_size > MAX_SECRET_BYTES or len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"secret reference {sref}: {p} is larger than the limit of {MAX_SECRET_BYTES // 1024} KiB "
                          "for a secret value")
    try:
        return data.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError:
        raise SecretError(f"secret reference {sref}: {p} is not UTF-8 text") from None


def resolve(ref: str | SecretRef, *, k8s: K8sReader | None = None) -> str:
    """Resolve a reference to its value and register the value for redaction.

    ``k8s`` reads key KEY of Secret NAME in NAMESPACE (``opsbook.clients.kube`` provides one); it is
    required only for ``k8s:`` references. Errors name the reference, never a value.
    """
    sref = ref if isinstance(ref, SecretRef) else parse_ref(ref)
    if sref.scheme == "env":
        if sref.target not in os.environ:
            raise SecretError(f"secret reference {sref}: environment variable {sref.target} is not set")
        value = os.environ[sref.target]
    elif sref.scheme == "file":
        value = read_file_ref(sref)  # regular files only, at most MAX_SECRET_BYTES
    else:
        if k8s is None:
            raise SecretError(f"secret reference {sref}: needs a Kubernetes client to resolve")
        ns, name, key = sref.k8s_parts
        value = k8s(ns, name, key)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        raise SecretError(f"secret reference {sref}: the value is larger than the limit of "
                          f"{MAX_SECRET_BYTES // 1024} KiB for a secret value")
    if len(value) < MIN_SECRET_LENGTH:
        raise SecretError(
            f"secret reference {sref}: the value is shorter than {MIN_SECRET_LENGTH} characters, "
            "too short to be redacted reliably from records")
    register(value)
    return value
