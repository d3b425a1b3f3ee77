"""Runbook logic, one module per concern: plain functions that take their clients and return
:class:`opsbook.results.Result` / :class:`opsbook.results.Check` objects."""
