"""The ``postgres`` fixture is a real PostgreSQL server: data survives a restart, errors are the server's."""

from __future__ import annotations

import os

import psycopg
import pytest

pytestmark = pytest.mark.services


def test_is_a_real_postgresql_15_on_loopback(postgres):
    assert postgres.host == "127.0.0.1"
    with psycopg.connect(postgres.dsn()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    assert version.startswith(f"{postgres.bin_dir.parent.name}.")
    assert listen == "127.0.0.1"
    assert os.path.samefile(data_dir, postgres.data_dir)
    assert (postgres.data_dir / f".s.PGSQL.{postgres.port}").exists()  # unix socket in the data dir
    assert (postgres.bin_dir / "pg_ctl").is_file()


def test_committed_row_survives_restart(postgres):
    dsn = postgres.create_database("durability")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes VALUES (1, %s)", ("written before the restart",))
    pid_before = postgres.postmaster_pid

    postgres.restart()

    assert postgres.postmaster_pid not in (None, pid_before)  # really a new server process
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, body FROM notes").fetchall()
    assert rows == [(1, "written before the restart")]


def test_uncommitted_row_is_rolled_back(postgres):
    dsn = postgres.create_database("rollback")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
    conn = psycopg.connect(dsn)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()  # no commit
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_wrong_database_name_raises(postgres):
    with pytest.raises(psycopg.OperationalError, match='database "no_such_db" does not exist'):
        psycopg.connect(postgres.dsn("no_such_db"), connect_timeout=5)


def test_creating_an_existing_database_raises(postgres):
    postgres.create_database("twice")
    with pytest.raises(psycopg.errors.DuplicateDatabase):
        postgres.create_database("twice")
