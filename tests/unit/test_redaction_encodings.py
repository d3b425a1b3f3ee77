"""Issue 15, section 3: a secret is redacted in every form a record may hold it.

A table of value variants x encodings: each encoding puts the value into some text the way a cell,
a server or a renderer would (with text around it), and after redaction none of the forms derived
from the value may be left. The end-to-end table over the record's files is in
``tests/engine/test_redaction_records.py``.
"""

from __future__ import annotations

import base64
import html
import json
import random
import re
import string
import urllib.parse
from collections.abc import Callable

import markupsafe
import pytest
from opsbook import secrets
from opsbook.records import record as recording

_rnd = random.Random(15)
VALUES = {
    "ascii": "plainSecretValue123",
    "both-quotes": "it's a \"quoted\" pw",
    "control-chars": "line1\nline2\tend\x07bell",
    "spaces-slashes": "with spaces/and/slashes",
    "plus-eq-pct": "a+b=c%20d+e==",
    "html-chars": "x&y<z>w&amp;'",
    "unicode": "pässwörd-€-秘密",
    "min-length": "Zq7!",
    "random-token": "".join(_rnd.choice(string.ascii_letters + string.digits + "-_") for _ in range(64)),
    "padded": "  padded-secret\n",
}


def b64_core(prefix: bytes, value: bytes, *, urlsafe: bool = False, suffix: bytes = b"!?") -> tuple[str, str]:
    """(the encoding of prefix + value + suffix, its characters that depend on the value alone)."""
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = enc(prefix + value + suffix).decode()
    p, n = len(prefix), len(value)
    return text, text[-(-8 * p // 6): 8 * (p + n) // 6]


def lower_pct(s: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


def _b64(k: int, urlsafe: bool) -> Callable[[str], tuple[str, list[str]]]:
    def encode(v: str) -> tuple[str, list[str]]:
        text, core = b64_core(b"\x00u:"[:k] if k else b"", v.encode(), urlsafe=urlsafe)
        return f"data: {text} end", [core]
    return encode


def _embedded(fn: Callable[[str], str]) -> Callable[[str], tuple[str, list[str]]]:
    return lambda v: (f"before «{fn(v)}» after", [fn(v)])


# name -> (value -> (text holding the encoded value, the forms that must not survive redaction))
ENCODINGS: dict[str, Callable[[str], tuple[str, list[str]]]] = {
    "plain": _embedded(lambda v: v),
    "json": _embedded(lambda v: json.dumps(v)[1:-1]),
    "json-object": lambda v: (json.dumps({"password": v, "n": 1}), [json.dumps(v)[1:-1]]),
    "json-unicode": _embedded(lambda v: json.dumps(v, ensure_ascii=False)[1:-1]),
    "json-go": _embedded(lambda v: json.dumps(v)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")
                         .replace("&", "\\u0026")),
    "repr": lambda v: (f"value={v!r}", [repr(v)[1:-1]]),
    "repr-both-quotes": lambda v: (repr("it's \"" + v + "\" ok"), [repr("'\"" + v)[4:-1]]),
    "ascii": lambda v: (f"value={ascii(v)}", [ascii(v)[1:-1]]),
    "bytes-repr": lambda v: (f"got {v.encode()!r}", [repr(v.encode())[2:-1]]),
    "html-escape": _embedded(html.escape),
    "html-escape-noquote": _embedded(lambda v: html.escape(v, quote=False)),
    "markupsafe": _embedded(lambda v: str(markupsafe.escape(v))),
    "html-escape-repr": lambda v: (f"<pre>{html.escape(repr(v))}</pre>", [html.escape(repr(v)[1:-1])]),
    "repr-of-html-escape": lambda v: (str({"html": html.escape(v)}), [repr(html.escape(v))[1:-1]]),
    "html-entities": _embedded(lambda v: "".join(f"&#{ord(c)};" for c in v)),
    "html-xmlcharref": _embedded(lambda v: html.escape(v).encode("ascii", "xmlcharrefreplace").decode()),
    "hex-lower": _embedded(lambda v: v.encode().hex()),
    "hex-upper": _embedded(lambda v: v.encode().hex().upper()),
    "quote": _embedded(lambda v: urllib.parse.quote(v, safe="")),
    "quote-slash": _embedded(urllib.parse.quote),
    "quote-plus": _embedded(urllib.parse.quote_plus),
    "quote-lower-hex": _embedded(lambda v: lower_pct(urllib.parse.quote(v, safe=""))),
    "url": lambda v: (f"https://admin:{urllib.parse.quote(v, safe='')}@logs.example/x?token="
                      f"{urllib.parse.quote_plus(v)}&n=1",
                      [urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v)]),
    "b64-offset0": _b64(0, False),
    "b64-offset1": _b64(1, False),
    "b64-offset2": _b64(2, False),
    "b64url-offset0": _b64(0, True),
    "b64url-offset1": _b64(1, True),
    "b64url-offset2": _b64(2, True),
    "b64-alone": lambda v: (f"x {base64.b64encode(v.encode()).decode()} y", [base64.b64encode(v.encode()).decode()]),
    "http-basic": lambda v: (f"Authorization: Basic {base64.b64encode(b'user:' + v.encode()).decode()}",
                             [b64_core(b"user:", v.encode(), suffix=b"")[1]]),
}

_REDACTORS: dict[str, secrets.Redactor] = {}


def redactor(value: str) -> secrets.Redactor:
    if value not in _REDACTORS:
        _REDACTORS[value] = secrets.Redactor([value])
    return _REDACTORS[value]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("variant", sorted(VALUES))
def test_every_encoding_of_every_value_is_redacted(variant, encoding):
    value = VALUES[variant]
    text, forms = ENCODINGS[encoding](value)
    out = redactor(value).redact(text)
    assert secrets.MASK in out
    for form in forms:
        assert len(form) >= secrets.MIN_SECRET_LENGTH
        assert form not in out, (variant, encoding, form, out)
    for raw in {value, value.strip()}:
        assert raw not in out


@pytest.mark.parametrize("variant", sorted(VALUES))
def test_the_base64_cores_of_a_short_value_are_long_enough(variant):
    """At offsets 1 and 2 the kept core is shortest; for a 4-byte value it is 4 characters, never less."""
    data = VALUES[variant].encode()
    for k in range(3):
        for urlsafe in (False, True):
            _, core = b64_core(b"\x00" * k, data, urlsafe=urlsafe)
            assert len(core) >= secrets.MIN_SECRET_LENGTH
            assert core in redactor(VALUES[variant]).values()


def test_values_are_byte_searchable_forms():
    value = VALUES["plus-eq-pct"]
    forms = set(redactor(value).values())
    assert {value, value.encode().hex(), value.encode().hex().upper(), urllib.parse.quote(value, safe=""),
            lower_pct(urllib.parse.quote(value, safe="")), b64_core(b"user:", value.encode())[1]} <= forms


def test_binary_evidence_holding_an_encoded_secret_is_dropped(tmp_path):
    value = VALUES["unicode"]
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe" + value.encode().hex().upper().encode() + b"\x00")
    (tmp_path / "basic.bin").write_bytes(b"\xff" + base64.b64encode(b"user:" + value.encode()) + b"\xfe")
    (tmp_path / "clean.bin").write_bytes(b"\xff\xfe\x00\x01")
    (tmp_path / "log.txt").write_text("auth " + urllib.parse.quote_plus(value) + "\n")
    dropped = recording.redact_evidence(tmp_path, secrets.Redactor([value]))
    assert sorted(dropped) == ["basic.bin", "blob.bin"]
    assert (tmp_path / "log.txt").read_text() == f"auth {secrets.MASK}\n"


def test_mixed_case_hex_and_percent_escapes_match_without_doubling_the_pattern():
    value = "pässwörd/€"
    red = secrets.Redactor([value])
    h = value.encode().hex()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(h))
    assert red.redact(f"<{mixed}>") == f"<{secrets.MASK}>"
    assert red.redact(lower_pct(urllib.parse.quote(value, safe=""))) == secrets.MASK
    hex_alternatives = [a for a in red._alternatives if re.fullmatch("".join(a), h)]
    assert len(hex_alternatives) == 1 and re.fullmatch("".join(hex_alternatives[0]), h.upper())


def test_the_longest_form_wins_and_forms_of_two_values_do_not_interfere():
    a, b = "alpha-secret-1", "alpha-secret-12"
    red = secrets.Redactor([a, b])
    assert red.redact("x alpha-secret-123 y") == f"x {secrets.MASK}3 y"
    assert red.redact(a.encode().hex() + "|" + b.encode().hex().upper()) == f"{secrets.MASK}|{secrets.MASK}"


def test_a_redactor_built_from_registered_values_matches_the_original():
    red = secrets.Redactor(list(VALUES.values()))
    again = secrets.Redactor(red.registered())
    assert again.values() == red.values()
    text = " ".join(ENCODINGS[e](v)[0] for e in sorted(ENCODINGS) for v in VALUES.values())
    assert again.redact(text) == red.redact(text)
