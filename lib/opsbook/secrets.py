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
import json
import os
import re
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


class Redactor:
    """Replaces every registered value (and its base64 form) with ``[REDACTED]``."""

    def __init__(self, values: list[str] | None = None):
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for v in values or []:
            self.register(v)

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> list[str]:
        """Every registered form (value, base64, JSON-escaped), for scanning binary data."""
        return sorted(self._values)

    def register(self, value: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            return
        forms = {value, value.strip()}
        b64 = base64.b64encode(value.encode()).decode()
        forms.add(b64.rstrip("="))
        # JSON-escaped form, for text that embeds the value inside a JSON string
        forms.add(json.dumps(value)[1:-1])
        new = {f for f in forms if len(f) >= MIN_SECRET_LENGTH} - self._values
        if new:
            self._values |= new
            # longest first, so that a value containing another is replaced whole
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def redact(self, text: str) -> str:
        if self._pattern is None or not isinstance(text, str):
            return text
        return self._pattern.sub(MASK, text)

    def redact_obj(self, obj: Any, *, skip_keys: frozenset[str] = frozenset({"image/png", "image/jpeg"})) -> Any:
        """Redact every string inside a JSON-like structure (a notebook, a manifest)."""
        if self._pattern is None:
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
        p = Path(sref.target).expanduser()
        try:
            value = p.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretError(f"secret reference {sref}: cannot read {p}: {exc.strerror}") from None
    else:
        if k8s is None:
            raise SecretError(f"secret reference {sref}: needs a Kubernetes client to resolve")
        ns, name, key = sref.k8s_parts
        value = k8s(ns, name, key)
    if len(value) < MIN_SECRET_LENGTH:
        raise SecretError(
            f"secret reference {sref}: the value is shorter than {MIN_SECRET_LENGTH} characters, "
            "too short to be redacted reliably from records")
    register(value)
    return value
