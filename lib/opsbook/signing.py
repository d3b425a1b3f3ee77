"""Signed ledger entries: an anchor for the records outside the reach of whoever can write the archive.

The ledger's hash chain shows any edit that is not followed through, but someone with write access
to the archive can rewrite an entry *and every entry after it* consistently: plain ``verify`` cannot
tell. A signature can: each ledger entry's ``hash`` (which covers the previous entry's hash, so the
whole chain up to it) is signed with the writer's SSH key, and ``verify`` and ``--approve`` accept
only signatures by a key listed in the repository's ``allowed_signers`` file. Rewriting an entry
then needs a trusted private key, not only write access to ``outputs/`` or the bucket.

The signature is an **SSHSIG** signature (the format of ``ssh-keygen -Y sign``, which git uses for
signed commits), namespace ``opsbook-ledger``, over the entry's hash as text. So an auditor can check
an entry with stock OpenSSH, without opsbook::

    printf %s HASH | ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n opsbook-ledger -s entry.sig

Keys: Ed25519 (``ssh-keygen -t ed25519``), unencrypted (a runner signs unattended; keep the key in a
secret store or the CI's secret files). ``$OPSBOOK_SIGNING_KEY`` names the private key file of the
process that writes records. ``allowed_signers`` (OpenSSH's format: ``principal[,principal...]
[options] ssh-ed25519 BASE64 [comment]``) is read from the project root, next to ``targets.yaml``;
it is part of the repository, reviewed like code. No environment variable names another one: the
list of trusted keys is not something a runner's environment can change.

Everything here is pure computation (the ``cryptography`` package); nothing touches the network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from opsbook.errors import SigningError

ENV_SIGNING_KEY = "OPSBOOK_SIGNING_KEY"
ALLOWED_SIGNERS_NAME = "allowed_signers"
NAMESPACE = "opsbook-ledger"
_MAGIC = b"SSHSIG"
_HASH = "sha512"
_KEYTYPE = "ssh-ed25519"
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", buf[pos:pos + 4])
    end = pos + 4 + n
    if end > len(buf):
        raise ValueError("truncated")
    return buf[pos + 4:end], end


def _pub_blob(raw: bytes) -> bytes:
    return _string(_KEYTYPE.encode()) + _string(raw)


def _signed_data(message: bytes, namespace: str) -> bytes:
    return (_MAGIC + _string(namespace.encode()) + _string(b"") + _string(_HASH.encode())
            + _string(hashlib.sha512(message).digest()))


@dataclass(frozen=True)
class Signer:
    """A private Ed25519 key that signs ledger entries."""

    key: object  # cryptography Ed25519PrivateKey
    path: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_ssh_private_key

        p = Path(path).expanduser()
        try:
            st = p.stat()
            if not p.is_file() or st.st_size > 64 * 1024:
                raise SigningError(f"signing key {p}: not a regular file of a sane size")
            data = p.read_bytes()
        except OSError as exc:
            raise SigningError(f"signing key {p}: cannot read it: {exc.strerror}") from None
        try:
            key = load_ssh_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningError(f"signing key {p}: not an unencrypted OpenSSH private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"signing key {p}: an Ed25519 key is required (ssh-keygen -t ed25519)")
        return cls(key=key, path=str(p))

    @classmethod
    def from_env(cls) -> Signer | None:
        path = os.environ.get(ENV_SIGNING_KEY, "").strip()
        return cls.load(path) if path else None

    @property
    def public_raw(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)  # type: ignore[attr-defined]

    def public_line(self) -> str:
        return f"{_KEYTYPE} {base64.b64encode(_pub_blob(self.public_raw)).decode()}"

    def sign(self, message: str | bytes, namespace: str = NAMESPACE) -> str:
        """The SSHSIG signature of ``message``, base64 without armour (one line, for the ledger)."""
        msg = message.encode() if isinstance(message, str) else message
        sig = self.key.sign(_signed_data(msg, namespace))  # type: ignore[attr-defined]
        blob = (_MAGIC + struct.pack(">I", 1) + _string(_pub_blob(self.public_raw)) + _string(namespace.encode())
                + _string(b"") + _string(_HASH.encode()) + _string(_string(_KEYTYPE.encode()) + _string(sig)))
        return base64.b64encode(blob).decode()


def armor(sig: str) -> str:
    """The one-line signature as ``ssh-keygen -Y verify -s FILE`` reads it."""
    lines = [sig[i:i + 70] for i in range(0, len(sig), 70)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def parse_signature(sig: str, namespace: str = NAMESPACE) -> tuple[bytes, bytes]:
    """(raw public key, raw signature) of a one-line SSHSIG; ``ValueError`` if malformed."""
    text = "".join(ln.strip() for ln in sig.strip().splitlines() if not ln.startswith("-----"))
    blob = base64.b64decode(text, validate=True)
    if not blob.startswith(_MAGIC):
        raise ValueError("not an SSH signature")
    pos = len(_MAGIC)
    (version,) = struct.unpack(">I", blob[pos:pos + 4])
    if version != 1:
        raise ValueError(f"SSHSIG version {version}")
    pub, pos = _read_string(blob, pos + 4)
    ns, pos = _read_string(blob, pos)
    _reserved, pos = _read_string(blob, pos)
    halg, pos = _read_string(blob, pos)
    sigblob, pos = _read_string(blob, pos)
    if ns.decode() != namespace:
        raise ValueError(f"namespace {ns.decode()!r}, expected {namespace!r}")
    if halg.decode() != _HASH:
        raise ValueError(f"hash {halg.decode()!r}")
    ktype, p2 = _read_string(pub, 0)
    raw_pub, _ = _read_string(pub, p2)
    stype, p3 = _read_string(sigblob, 0)
    raw_sig, _ = _read_string(sigblob, p3)
    if ktype.decode() != _KEYTYPE or stype.decode() != _KEYTYPE:
        raise ValueError(f"key type {ktype.decode()!r}: only {_KEYTYPE} is accepted")
    return raw_pub, raw_sig


@dataclass(frozen=True)
class AllowedSigners:
    """The trusted keys: raw Ed25519 public key -> principals (from an ``allowed_signers`` file)."""

    keys: dict[bytes, str]
    path: str | None = None

    @classmethod
    def load(cls, path: Path) -> AllowedSigners | None:
        """The file's keys; ``None`` if there is no such file (signing not configured)."""
        if not path.is_file():
            return None
        keys: dict[bytes, str] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                i = next(i for i, p in enumerate(parts) if p == _KEYTYPE)
                blob = base64.b64decode(parts[i + 1], validate=True)
                ktype, pos = _read_string(blob, 0)
                raw, _ = _read_string(blob, pos)
            except (StopIteration, IndexError, ValueError) as exc:
                raise SigningError(f"{path}:{n}: expected 'principal ssh-ed25519 BASE64' ({exc or 'no ed25519 key'})")\
                    from None
            if ktype.decode() != _KEYTYPE or len(raw) != 32:
                raise SigningError(f"{path}:{n}: not an Ed25519 public key")
            keys[raw] = parts[0]
        return cls(keys=keys, path=str(path))

    def check(self, message: str | bytes, sig: str | None, namespace: str = NAMESPACE) -> str:
        """The principal whose trusted key made ``sig`` over ``message``; ``ValueError`` saying why not."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if not sig:
            raise ValueError("not signed")
        try:
            raw_pub, raw_sig = parse_signature(sig, namespace)
        except (ValueError, struct.error) as exc:
            raise ValueError(f"malformed signature ({exc})") from None
        principal = self.keys.get(raw_pub)
        if principal is None:
            raise ValueError("signed by a key that is not in allowed_signers")
        msg = message.encode() if isinstance(message, str) else message
        try:
            Ed25519PublicKey.from_public_bytes(raw_pub).verify(raw_sig, _signed_data(msg, namespace))
        except InvalidSignature:
            raise ValueError(f"the signature by {principal} does not match the entry") from None
        return principal


def allowed_signers_path() -> Path:
    from opsbook.catalog import catalogue_root

    return catalogue_root() / ALLOWED_SIGNERS_NAME


def trusted() -> AllowedSigners | None:
    """The repository's trusted signers, or ``None`` when the project configures none."""
    return AllowedSigners.load(allowed_signers_path())
