from __future__ import annotations

import base64
import json

import pytest
from opsbook import secrets
from opsbook.errors import SecretError


def test_redactor_replaces_value_and_encoded_forms():
    r = secrets.Redactor(["pa$$w0rd\"quoted"])
    raw = "pa$$w0rd\"quoted"
    assert r.redact(f"x {raw} y") == f"x {secrets.MASK} y"
    assert raw not in r.redact(json.dumps({"v": raw}))
    b64 = base64.b64encode(raw.encode()).decode()
    assert raw not in r.redact(b64) and b64.rstrip("=") not in r.redact(b64)


def test_redactor_walks_structures_but_leaves_images():
    r = secrets.Redactor(["topsecretvalue"])
    nb = {"cells": [{"outputs": [{"text": ["a topsecretvalue b"], "data": {"image/png": "topsecretvalue"}}]}]}
    out = r.redact_obj(nb)
    assert out["cells"][0]["outputs"][0]["text"] == [f"a {secrets.MASK} b"]
    assert out["cells"][0]["outputs"][0]["data"]["image/png"] == "topsecretvalue"


def test_short_values_are_not_registered():
    r = secrets.Redactor(["abc"])
    assert len(r) == 0 and r.redact("abc") == "abc"


def test_longest_value_wins():
    r = secrets.Redactor(["secret", "secret-longer"])
    assert r.redact("secret-longer") == secrets.MASK


def test_resolve_env_registers_and_writes_runner_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "tok-123456789")
    f = tmp_path / "s.jsonl"
    monkeypatch.setenv(secrets.ENV_SECRETS_FILE, str(f))
    assert secrets.resolve("env:MY_TOKEN") == "tok-123456789"
    assert secrets.read_registered(f) == ["tok-123456789"]
    assert (f.stat().st_mode & 0o777) == 0o600
    assert secrets.REDACTOR.redact("tok-123456789") == secrets.MASK


def test_resolve_file(tmp_path):
    p = tmp_path / "pw"
    p.write_text("from-a-file-9\n")
    assert secrets.resolve(f"file:{p}") == "from-a-file-9"


def test_resolve_errors_name_the_reference_not_a_value(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(SecretError, match="NOPE_NOT_SET is not set"):
        secrets.resolve("env:NOPE_NOT_SET")
    with pytest.raises(SecretError, match="cannot read"):
        secrets.resolve(f"file:{tmp_path}/missing")
    with pytest.raises(SecretError, match="needs a Kubernetes client"):
        secrets.resolve("k8s:ns/name/key")
    monkeypatch.setenv("SHORT", "ab")
    with pytest.raises(SecretError, match="shorter than"):
        secrets.resolve("env:SHORT")


def test_resolve_k8s_uses_the_given_reader():
    calls = []

    def reader(ns, name, key):
        calls.append((ns, name, key))
        return "from-kubernetes"

    assert secrets.resolve("k8s:ml/db-creds/password", k8s=reader) == "from-kubernetes"
    assert calls == [("ml", "db-creds", "password")]


@pytest.mark.parametrize("value", ["-----BEGIN RSA PRIVATE KEY-----\nabc", "AKIAABCDEFGHIJKLMNOP",
                                   "postgresql://u:pw@host/db", "xoxb-1234567890-abcdef"])
def test_looks_secret(value):
    assert secrets.looks_secret(value)


@pytest.mark.parametrize("value", ["ml-platform", "https://mlflow.example.com", "registry/app:1.2"])
def test_does_not_look_secret(value):
    assert not secrets.looks_secret(value)
