"""The capability probes of the conformance suite (``conftest.py``): on the test server every one must
find its capability, so that a test skipped "by capability" can only be skipped on a cluster that
really lacks it; and a probe names what is missing."""

from __future__ import annotations

import pytest
from opsbook.testing.kube import requires_test_server

from .conftest import CAPABILITIES, Capabilities

pytestmark = pytest.mark.kube


@requires_test_server
def test_every_capability_is_present_on_the_test_server(capabilities):
    assert {name: capabilities.missing(name) for name in CAPABILITIES} == dict.fromkeys(CAPABILITIES)


@requires_test_server
def test_a_probe_that_fails_says_why(kube_api):
    caps = Capabilities(kube_api, timeout=0.0)  # nothing can happen in no time: every pod probe fails
    try:
        why = caps.missing("needs_kubelet")
        assert why is not None and "is not Ready after 0 s" in why
        assert caps.missing("needs_kubelet") == why  # probed once, remembered
    finally:
        caps.close()
