"""The ``postgres`` fixture: a private PostgreSQL cluster (Debian ``postgresql``), run as user
``postgres`` when the tests run as root."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from opsbook.testing.timing import record_startup

from .process import (
    LOOPBACK,
    fail_service,
    free_port,
    register_cleanup,
    unregister_cleanup,
)

POSTGRES_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)


def _postgres_bin_dir() -> Path | None:
    env = os.environ.get("OPSBOOK_PG_BIN")
    candidates = [env] if env else []
    candidates += list(POSTGRES_BIN_CANDIDATES)
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for cand in candidates:
        if cand and (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    return None


@dataclass
class PostgresService:
    """A private PostgreSQL cluster on 127.0.0.1:``port``; superuser ``user``, trust authentication."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path
    log_path: Path
    _as_user: list[str] = field(default_factory=list, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI for psycopg: ``postgresql://postgres@127.0.0.1:PORT/DBNAME``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL with the psycopg 3 driver (what ``mlflow server --backend-store-uri`` takes)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (it must not exist yet); returns its :meth:`dsn`."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [*self._as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses={self.host} -k {self.data_dir}"
        res = self._pg_ctl("-l", str(self.log_path), "-o", opts, "-w", "-t", "60", "start", timeout=90)
        if res.returncode != 0:
            fail_service(
                "postgres", f"pg_ctl start exited {res.returncode}: {res.stdout}{res.stderr}", self.log_path
            )

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid is None:
            return
        res = self._pg_ctl("-m", mode, "-w", "-t", "30", "stop", timeout=45)
        if res.returncode != 0 and self.postmaster_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.postmaster_pid, signal.SIGQUIT)  # immediate shutdown

    def restart(self) -> None:
        """Stop the server (fast shutdown) and start it again on the same port and data directory."""
        self.stop("fast")
        self.start()


def _kill_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGQUIT)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    """A private PostgreSQL 15 cluster: ``initdb --auth=trust``, socket in the data directory."""
    t0 = time.monotonic()
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "service 'postgres' could not start: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
            "(run `make setup`, which apt-installs `postgresql`)",
            pytrace=False,
        )
    base = Path(tempfile.mkdtemp(prefix="opsbook-postgres-"))
    base.chmod(0o755)  # the postgres user must traverse it
    data_dir, log_path = base / "data", base / "postgres.log"
    data_dir.mkdir(mode=0o700)
    log_path.touch()
    as_user: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail(
                "service 'postgres' could not start: running as root but there is no `postgres` user "
                "(apt-get install postgresql creates it)",
                pytrace=False,
            )
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
        os.chown(log_path, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    else:
        import getpass

        user = getpass.getuser()
    pg = PostgresService(LOOPBACK, free_port(), user, bin_dir, data_dir, log_path, as_user)

    def emergency_stop() -> None:
        _kill_postmaster(data_dir)
        shutil.rmtree(base, ignore_errors=True)

    key = register_cleanup(emergency_stop)
    try:
        init = subprocess.run(
            [
                *as_user,
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "-U",
                user,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
        if init.returncode != 0:
            log_path.write_text(init.stdout + init.stderr)
            fail_service("postgres", f"initdb exited {init.returncode}", log_path)
        pg.start()
        record_startup("postgres", time.monotonic() - t0)
        yield pg
    finally:
        try:
            pg.stop("fast")
        finally:
            _kill_postmaster(data_dir)
            unregister_cleanup(key)
            shutil.rmtree(base, ignore_errors=True)
