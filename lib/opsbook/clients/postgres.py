"""The PostgreSQL client (psycopg 3): MLflow's backend store, seen from the operator's side.

    db = Postgres(host="db.staging", port=5432, dbname="mlflow", user="mlflow", password=resolved)
    db.server_version()          # "15.8"
    db.mlflow_schema()           # alembic revision of MLflow's schema, or None if not created yet
    db.run_rows(run_id)          # {"runs": 1, "params": 3, "metrics": 7, ...}

The password is passed to libpq as a separate keyword, never inside the DSN: :attr:`Postgres.dsn`
(what is shown and recorded) has no password, and neither has any error message. Errors are ours,
with the psycopg error chained::

    ClientError
    ├── Forbidden       password authentication failed, no such role, pg_hba refuses the host
    ├── NotFound        the database does not exist
    ├── Unreachable     connection refused, DNS, server shutting down or starting up
    └── TimedOut        no answer within ``connect_timeout``

``psycopg`` is imported on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opsbook.errors import ClientError, Forbidden, NotFound, TimedOut, Unreachable

__all__ = ["Postgres", "MLFLOW_RUN_TABLES"]

# MLflow tables that hold rows of one run, and the column naming the run
MLFLOW_RUN_TABLES: dict[str, str] = {
    "runs": "run_uuid",
    "params": "run_uuid",
    "metrics": "run_uuid",
    "latest_metrics": "run_uuid",
    "tags": "run_uuid",
    "logged_models": "source_run_id",
}


class Postgres:
    """One PostgreSQL database reached with a user and (optionally) a password."""

    def __init__(self, *, host: str, port: int = 5432, dbname: str, user: str, password: str | None = None,
                 connect_timeout: int = 5, sslmode: str | None = None, application_name: str = "opsbook"):
        self.host, self.port, self.dbname, self.user = host, int(port), dbname, user
        self._password = password
        self.connect_timeout = max(1, int(connect_timeout))
        self.sslmode = sslmode
        self.application_name = application_name

    def __repr__(self) -> str:
        return f"Postgres({self.dsn!r})"

    @property
    def dsn(self) -> str:
        """Where it connects, without the password: ``postgresql://USER@HOST:PORT/DBNAME``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def _error(self, exc: Exception) -> ClientError:
        import psycopg

        text = " ".join(str(exc).split())
        low = text.lower()
        where = f"PostgreSQL {self.dsn}"
        # strip libpq's 'connection failed: connection to server at "...", port N failed: ' preamble
        reason = text.split("failed: ")[-1] if "failed: " in text else text
        if "password authentication failed" in low or "no password supplied" in low or (
                "role" in low and "does not exist" in low) or "pg_hba.conf" in low:
            return Forbidden(f"{where}: the server refused the credentials: {reason}")
        if "database" in low and "does not exist" in low:
            return NotFound(f"{where}: database {self.dbname!r} does not exist")
        if "timeout expired" in low or isinstance(exc, psycopg.errors.ConnectionTimeout):
            return TimedOut(f"{where}: no answer within {self.connect_timeout} s")
        if ("connection refused" in low or "could not translate host name" in low or "no route to host" in low
                or "the database system is" in low or "server closed the connection" in low):
            return Unreachable(f"{where} is not reachable: {reason}")
        if isinstance(exc, psycopg.OperationalError):
            return Unreachable(f"{where}: {reason}")
        return ClientError(f"{where}: {reason}")

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """A psycopg connection (autocommit, read-only use), closed on exit."""
        import psycopg

        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user,
                                  "connect_timeout": self.connect_timeout, "autocommit": True,
                                  "application_name": self.application_name}
        if self._password is not None:
            kwargs["password"] = self._password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        try:
            conn = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def server_version(self) -> str:
        """The server's version, e.g. ``15.8`` (``SHOW server_version``)."""
        with self.connect() as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0]).split(" ")[0]

    def info(self) -> dict[str, Any]:
        """Version, current user and database, and MLflow's schema revision (one connection)."""
        with self.connect() as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0]).split(" ")[0]
            user, db = conn.execute("SELECT current_user, current_database()").fetchone()
            revision = self._revision(conn)
        return {"server_version": version, "user": user, "database": db, "mlflow_schema": revision}

    @staticmethod
    def _revision(conn: Any) -> str | None:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]
        if not exists:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version LIMIT 1").fetchone()
        return str(row[0]) if row else ""

    def mlflow_schema(self) -> str | None:
        """The alembic revision of MLflow's schema; None if the ``alembic_version`` table does not exist
        (MLflow creates it on the server's first start); "" if it exists but is empty."""
        with self.connect() as conn:
            return self._revision(conn)

    def run_rows(self, run_id: str) -> dict[str, int]:
        """How many rows each MLflow table holds for ``run_id`` (tables that do not exist are left out)."""
        from psycopg import sql

        out: dict[str, int] = {}
        with self.connect() as conn:
            for table, column in MLFLOW_RUN_TABLES.items():
                if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
                    continue
                query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(table),
                                                                                 sql.Identifier(column))
                out[table] = int(conn.execute(query, (run_id,)).fetchone()[0])
        return out
