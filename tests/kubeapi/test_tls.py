"""The API is served over TLS, verified with the CA the kubeconfig carries, as on a real cluster: the
official client, kubectl and plain TLS clients trust it through that CA and nothing else."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from opsbook.testing.kube import KubeApi, kubectl_binary

pytestmark = pytest.mark.kube


def _cluster_entry(api: KubeApi) -> dict:
    cfg = yaml.safe_load(Path(api.kubeconfig).read_text())
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == api.context)
    return next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])


def _ca_or_skip(api: KubeApi) -> str:
    if not api.ca_file:
        pytest.skip("the kubeconfig names no CA for this cluster (a public CA, or TLS verification off)")
    return api.ca_file


def _without_ca(api: KubeApi, path: Path) -> Path:
    """The same kubeconfig with the cluster's CA taken out: the client falls back to the system's CAs."""
    cfg = yaml.safe_load(Path(api.kubeconfig).read_text())
    for c in cfg["clusters"]:
        for key in ("certificate-authority-data", "certificate-authority", "insecure-skip-tls-verify"):
            c["cluster"].pop(key, None)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_api_is_https_and_the_kubeconfigs_ca_verifies_it(kube_api):
    ca_file = _ca_or_skip(kube_api)
    entry = _cluster_entry(kube_api)
    assert entry["server"].startswith("https://") and kube_api.url.startswith("https://")
    assert "insecure-skip-tls-verify" not in entry
    if kube_api.is_test_server:  # the CA travels inside the kubeconfig, as `kubeadm` and `kind` write it
        pem = base64.b64decode(entry["certificate-authority-data"]).decode()
        assert pem.startswith("-----BEGIN CERTIFICATE-----") and Path(ca_file).read_text() == pem
    # a plain TLS client that trusts only that CA, checking the name in the URL: any HTTP answer means
    # the handshake succeeded (a cluster may refuse anonymous requests, even for /version)
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(kube_api.url + "/version", timeout=10, context=ctx) as resp:
            assert json.loads(resp.read())["gitVersion"].startswith("v1.")
    except urllib.error.HTTPError as e:
        assert e.code in (401, 403), e
    # the official client and kubectl, through the kubeconfig
    from kubernetes import client

    with kube_api.api_client() as api:
        assert client.VersionApi(api).get_code().git_version.startswith("v1.")
        assert api.configuration.verify_ssl
    out = kube_api.kubectl("get", "--raw", "/version").stdout
    assert json.loads(out)["gitVersion"].startswith("v1.")


def test_a_client_without_the_ca_is_refused_with_a_certificate_error(kube_api, tmp_path):
    _ca_or_skip(kube_api)
    with pytest.raises(urllib.error.URLError) as err:  # the system's CAs only
        urllib.request.urlopen(kube_api.url + "/version", timeout=10, context=ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError), err.value
    assert "certificate verify failed" in str(err.value.reason)

    kubeconfig = _without_ca(kube_api, tmp_path / "kubeconfig")
    proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "--context", kube_api.context,
                           "get", "--raw", "/version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "x509: certificate signed by unknown authority" in proc.stderr, proc.stderr

    import urllib3
    from kubernetes import client, config

    with config.new_client_from_config(config_file=str(kubeconfig), context=kube_api.context) as api:
        api.configuration.retries = 0
        with pytest.raises(urllib3.exceptions.MaxRetryError) as failed:
            client.VersionApi(api).get_code()
    assert isinstance(failed.value.reason, urllib3.exceptions.SSLError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value.reason)


def test_the_server_certificate_names_localhost_and_the_loopback_address(kube_api):
    """The names the kubeconfig may use for a server on this machine, checked as Go and Python do."""
    if not kube_api.is_test_server:
        pytest.skip("the names in a real cluster's certificate are its own")
    port = urlsplit(kube_api.url).port
    ctx = kube_api.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        ctx.wrap_socket(raw, server_hostname="api.example.org")


def test_every_namespace_publishes_the_ca_that_signed_the_server(kube):
    """kube-root-ca.crt (the root-CA publisher's ConfigMap, what a pod's service-account mount holds)
    carries the CA a client inside the cluster must trust: the one the kubeconfig names."""
    ca_file = _ca_or_skip(kube.api)
    out = kube.kubectl("get", "configmap", "kube-root-ca.crt", "-o", "json").stdout
    published = json.loads(out)["data"]["ca.crt"]
    assert Path(ca_file).read_text().strip() in published
