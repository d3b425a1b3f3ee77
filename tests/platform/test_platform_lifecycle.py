"""How the service fixtures behave when a service cannot start, and the start-up summary."""

from __future__ import annotations

import sys

import pytest
from opsbook.testing import timing
from opsbook.testing.services.process import _Process


def test_a_service_that_exits_fails_the_test_with_its_log(tmp_path):
    log = tmp_path / "broken.log"
    proc = _Process(
        "broken", [sys.executable, "-c", "print('boom: address already in use'); raise SystemExit(3)"], log
    )
    proc.start()
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)'broken' could not start.*code 3.*boom: address already"
    ):
        proc.wait_ready(lambda: False, timeout=20)
    assert proc.popen is None  # stopped and forgotten


def test_a_service_that_never_answers_fails_after_the_timeout_and_is_stopped(tmp_path):
    log = tmp_path / "slow.log"
    proc = _Process(
        "slow",
        [sys.executable, "-c", "import time; print('starting...', flush=True); time.sleep(60)"],
        log,
        grace=1,
    )
    proc.start()
    popen = proc.popen
    with pytest.raises(pytest.fail.Exception, match=r"(?s)not ready after.*starting\.\.\."):
        proc.wait_ready(lambda: False, timeout=1)
    assert popen.poll() is not None  # the process (group) was killed


def test_startup_summary_line():
    line = timing.format_startup_summary({"postgres": 1.23, "s3": 0.9})
    assert line == "service start-up: postgres 1.2 s, s3 0.9 s, total 2.1 s"
    assert timing.format_startup_summary({}) == ""
