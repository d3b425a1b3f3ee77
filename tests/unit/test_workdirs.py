"""Issue 15, section 3: working folders are private, removed, and swept when their owner was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import opsbook
import pytest
from opsbook import catalog, notebook, secrets, workdirs
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS

RUN = "20260101T000000Z-abcdef"


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch):
    """A private temporary directory for mkdtemp and the sweep (never the machine's /tmp)."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def mode(p: Path) -> int:
    return os.lstat(p).st_mode & 0o777


def spawn_owner(tmpdir: Path, prefix: str) -> tuple[subprocess.Popen[str], Path]:
    """A process that makes a workdir (with a secrets file in it) and then waits to be killed."""
    code = ("import sys, time\nfrom opsbook import workdirs\n"
            f"d = workdirs.make_workdir({prefix!r})\n"
            "(d / 'secrets.jsonl').write_text('\"hunter2-value\"\\n')\n"
            "print(d, flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    line = proc.stdout.readline().strip()
    assert line, "the owner process did not start"
    return proc, Path(line)


def test_make_workdir_is_private_and_names_its_owner(tmpdir_):
    d = workdirs.make_workdir(f"opsbook-{RUN}-")
    assert d.parent == tmpdir_ and mode(d) == 0o700
    owner = d / workdirs.OWNER_FILE
    assert mode(owner) == 0o600
    doc = json.loads(owner.read_text())
    assert doc["pid"] == os.getpid() and doc["start"] and workdirs.owner_alive(d) is True


def test_a_killed_owners_folder_is_swept_and_a_live_owners_is_kept(tmpdir_, tmp_path):
    killed, dead_dir = spawn_owner(tmpdir_, f"opsbook-{RUN}-")
    live, live_dir = spawn_owner(tmpdir_, "opsbook-20260101T000001Z-123456-")
    try:
        mine = workdirs.make_workdir(f"opsbook-{RUN}-")
        assert dead_dir.parent == tmpdir_ and mode(dead_dir) == 0o700
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        assert dead_dir.is_dir()  # nobody removed it: SIGKILL cannot be handled
        removed = workdirs.sweep_stale_workdirs(project_root=tmp_path / "project")
        assert removed == [dead_dir] and not dead_dir.exists()
        assert live_dir.is_dir() and mine.is_dir()
    finally:
        for p in (killed, live):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            p.stdout.close()


def test_a_recycled_pid_is_not_taken_for_the_owner(tmpdir_, tmp_path):
    d = workdirs.make_workdir(f"opsbook-{RUN}-")
    owner = d / workdirs.OWNER_FILE
    doc = json.loads(owner.read_text())
    owner.write_text(json.dumps({**doc, "start": str(int(doc["start"]) - 1)}))  # this pid, another process
    assert workdirs.owner_alive(d) is False
    assert workdirs.sweep_stale_workdirs(project_root=tmp_path / "project") == [d]


def test_folders_without_an_owner_are_swept_only_when_old_and_named_like_a_run(tmpdir_, tmp_path):
    fresh = tmpdir_ / f"opsbook-{RUN}-fresh1"
    old = tmpdir_ / f"opsbook-{RUN}-old123"
    other = tmpdir_ / "opsbook-deploy-old456"  # someone else's use of the prefix
    for d in (fresh, old, other):
        (d / "record").mkdir(parents=True)
        (d / "record" / "notebook.ipynb").write_text("{}")
    two_days_ago = time.time() - 2 * workdirs.DAY
    for d in (old, other):
        for p in (d / "record" / "notebook.ipynb", d / "record", d):
            os.utime(p, (two_days_ago, two_days_ago))
    assert workdirs.sweep_stale_workdirs(project_root=tmp_path / "project") == [old]
    assert fresh.is_dir() and other.is_dir()
    assert workdirs.sweep_stale_workdirs(0, project_root=tmp_path / "project") == [fresh]


def test_symlinks_and_other_users_folders_are_left_alone(tmpdir_, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / workdirs.OWNER_FILE).write_text(json.dumps({"pid": 999999999, "start": "1"}))
    (target / "precious").write_text("keep me")
    link = tmpdir_ / f"opsbook-{RUN}-link"
    link.symlink_to(target)
    # a folder whose owner file is a symlink to a dead owner's file is not judged by it
    d = workdirs.make_workdir(f"opsbook-{RUN}-")
    (d / workdirs.OWNER_FILE).unlink()
    (d / workdirs.OWNER_FILE).symlink_to(target / workdirs.OWNER_FILE)
    assert workdirs.sweep_stale_workdirs(project_root=tmp_path / "project") == []
    assert link.is_symlink() and (target / "precious").read_text() == "keep me" and d.is_dir()
    if os.getuid() == 0:  # as root: a folder of another user, with a dead owner, is not removed
        theirs = tmpdir_ / f"opsbook-{RUN}-theirs"
        theirs.mkdir()
        (theirs / workdirs.OWNER_FILE).write_text(json.dumps({"pid": 999999999, "start": "1"}))
        os.chown(theirs, 65534, 65534)
        assert workdirs.sweep_stale_workdirs(project_root=tmp_path / "project") == []
        assert theirs.is_dir()


def test_stale_interactive_folders_are_swept(tmpdir_, tmp_path):
    root = tmp_path / "project"
    killed, _ = spawn_owner(tmpdir_, "opsbook-x-")
    killed.kill()
    killed.wait(timeout=10)
    killed.stdout.close()
    dead = workdirs.interactive_root(root) / RUN
    (dead / "evidence").mkdir(parents=True)
    (dead / workdirs.OWNER_FILE).write_text(json.dumps({"pid": killed.pid, "start": "1"}))
    live = workdirs.claim_dir(workdirs.interactive_root(root) / "20260101T000002Z-fedcba")
    assert mode(live) == 0o700 and workdirs.owner_alive(live) is True
    removed = workdirs.sweep_stale_workdirs(project_root=root)
    assert dead in removed and not dead.exists() and live.is_dir()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (the cwd, where ``.opsbook/`` goes), running the fixture runbooks."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv(catalog.ENV_NOTEBOOKS, str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv(catalog.ENV_OUTPUTS, str(tmp_path / "outputs"))
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", "interactive-secret-value")
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID, notebook.ENV_EVIDENCE_DIR,
                secrets.ENV_SECRETS_FILE):
        monkeypatch.delenv(var, raising=False)
    return root


def test_interactive_evidence_is_private_and_removed_once_recorded(project, tmpdir_, tmp_path):
    run = opsbook.start("passing", {"mode": "plan", "target": "local", "namespace": "ml-platform", "replicas": 2,
                                    "db_password": "env:OPSBOOK_FIXTURE_SECRET"})
    pw = run.secret("db_password")
    run.evidence("pods/web-0.json", {"name": "web-0", "token": pw}, description="the pod")
    run.evidence("raw/blob.bin", b"\xff\xfe\x00\x01")
    run_dir = project / ".opsbook" / "interactive" / run.id
    assert run.evidence_dir == run_dir / "evidence"
    assert mode(run_dir) == 0o700 and workdirs.owner_alive(run_dir) is True
    assert mode(run_dir.parent) == 0o700  # .opsbook/interactive, created here
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) == 3 and all(mode(p) == 0o600 for p in files)
    assert all(mode(p) == 0o700 for p in run_dir.rglob("*") if p.is_dir())

    run.summary(record=True)
    assert not run_dir.exists()  # archived, then removed
    assert not any(tmpdir_.iterdir())  # the staging folder too
    rec = Path(Archive(tmp_path / "outputs").find(run.id).path)
    assert json.loads((rec / "evidence" / "pods" / "web-0.json").read_text())["token"] == secrets.MASK
