"""What Go prints, for the error messages the real API server builds with ``fmt`` and from the Go
libraries it decodes with: values as ``%v`` / ``%#v`` print them, ``strconv.Quote``, and the two
decoders whose own messages reach the client (``resource.ParseQuantity`` and base64 of ``[]byte``
fields). Clients and people match these messages, so they are ported, not paraphrased."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            '"': '\\"', "\\": "\\\\"}


def quote(s: str) -> str:
    """``strconv.Quote`` (``%q``)."""
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def float_v(f: float) -> str:
    """``%v`` of a float64: strconv's shortest ``'g'`` (exponent from 1e+06 on, or below 1e-04)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    dp = len(digits) + int(exp)  # position of the decimal point
    x = dp - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return neg + ds + "0" * (dp - len(ds))
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def v(val: Any) -> str:
    """``%v`` of an unstructured value (``map[string]interface{}``, ``[]interface{}``, scalars)."""
    if val is None:
        return "<nil>"
    if val is True or val is False:
        return "true" if val else "false"
    if isinstance(val, float):
        return float_v(val)
    if isinstance(val, dict):
        return "map[" + " ".join(f"{k}:{v(val[k])}" for k in sorted(val)) + "]"
    if isinstance(val, list):
        return "[" + " ".join(v(x) for x in val) + "]"
    return str(val)


def sharp_v(val: Any) -> str:
    """``%#v`` of the same values, as they sit in an ``interface{}``."""
    if val is None:
        return "interface {}(nil)"
    if isinstance(val, str):
        return quote(val)
    if isinstance(val, dict):
        return "map[string]interface {}{" + ", ".join(f"{quote(k)}:{sharp_v(val[k])}" for k in sorted(val)) + "}"
    if isinstance(val, list):
        return "[]interface {}{" + ", ".join(sharp_v(x) for x in val) + "}"
    return v(val)


def kind_of(val: Any) -> str:
    """``reflect.Kind`` of an unstructured value (the apiserver decodes JSON ints as int64)."""
    if isinstance(val, str):
        return "string"
    if val is True or val is False:
        return "bool"
    if isinstance(val, int):
        return "int64"
    if isinstance(val, float):
        return "float64"
    return "map" if isinstance(val, dict) else "slice"


def type_of(val: Any) -> str:
    """``%T`` of an unstructured value."""
    if isinstance(val, dict):
        return "map[string]interface {}"
    if isinstance(val, list):
        return "[]interface {}"
    return kind_of(val)


def json_kind(val: Any) -> str:
    """How encoding/json names a JSON value it cannot store (``UnmarshalTypeError.Value``)."""
    if isinstance(val, str):
        return "string"
    if val is True or val is False:
        return "bool"
    if isinstance(val, (int, float)):
        return "number"
    return "object" if isinstance(val, dict) else "array"


def number_text(val: int | float) -> str:
    """The JSON text of a number, as a client would have sent it."""
    return str(val) if isinstance(val, int) else repr(val).replace("inf", "1e999")


# ---------------------------------------------------------------- resource.ParseQuantity

# k8s.io/apimachinery/pkg/api/resource/quantity.go (splitREString, ErrFormatWrong, ErrSuffix)
QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
QUANTITY_SUFFIX = "unable to parse quantity's suffix"
_SUFFIXES = {"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
_EXPONENT = re.compile(r"[eE][-+]?[0-9]+")


def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


def quantity_error(s: str) -> str | None:
    """The error of ``resource.ParseQuantity(strings.TrimSpace(s))`` (a port of parseQuantityString
    and the suffixer), None when it parses. Its third error, ErrNumeric, needs more than 18 digits
    of an exotic shape and is left out."""
    s = s.strip()
    if not s:
        return QUANTITY_FORMAT
    digits = "0123456789"
    pos = _skip(s, 1 if s[0] in "+-" else 0, "0")
    pos = _skip(s, pos, digits)
    if pos < len(s) and s[pos] == ".":
        pos = _skip(s, pos + 1, digits)
    start = pos
    pos = _skip(s, pos, "eEinumkKMGTP")
    if pos < len(s):
        pos = _skip(s, pos + (s[pos] in "+-"), digits)
        if pos < len(s):
            return QUANTITY_FORMAT
    suffix = s[start:]
    if suffix in _SUFFIXES or (len(suffix) > 1 and _EXPONENT.fullmatch(suffix)):
        return None
    return QUANTITY_SUFFIX


# ---------------------------------------------------------------- encoding/base64 (StdEncoding)

_B64 = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def base64_error(s: str) -> str | None:
    """``base64.StdEncoding.Decode``'s ``CorruptInputError``, as encoding/json reports a bad ``[]byte``:
    a port of Go's decodeQuantum (newlines skipped, padding required)."""
    src = s.encode()
    si, n = 0, len(src)
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return f"illegal base64 data at input byte {si - j}"
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in (10, 13):
                continue
            if c != 61:  # '='
                return f"illegal base64 data at input byte {si - 1}"
            if j in (0, 1):
                return f"illegal base64 data at input byte {si - 1}"
            if j == 2:
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    return f"illegal base64 data at input byte {n}"
                if src[si] != 61:
                    return f"illegal base64 data at input byte {si - 1}"
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            if si < n:
                return f"illegal base64 data at input byte {si}"
            return None
    return None
