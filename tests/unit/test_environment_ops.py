"""The environment-check runbook's functions, called directly."""

from __future__ import annotations

from opsbook.ops import environment_check as environment
from opsbook.testing.runbook import make_context


def test_a_package_that_is_not_installed_is_named_and_fails_the_step():
    res = environment.package_versions(make_context("environment-check", packages=["pytest", "no-such-package-opsbook-16"]))
    assert res.outcome == "failed"
    assert res.summary == "1 of 2 installed; not installed: no-such-package-opsbook-16"
    assert res.details["missing"] == ["no-such-package-opsbook-16"]
    assert res.rows[0]["package"] == "pytest" and res.rows[0]["status"] == "ok" and res.rows[0]["version"] != "-"
    assert res.rows[1] == {"package": "no-such-package-opsbook-16", "version": "-", "status": "not installed"}


def test_all_packages_installed_is_ok():
    res = environment.package_versions(make_context("environment-check", packages=["pytest"]))
    assert res.outcome == "ok" and res.summary == "1 of 1 installed" and res.details["missing"] == []
