"""PostgreSQL backups: ``pg_dump`` / ``pg_restore`` / ``psql`` driven through :class:`~opsbook.clients.tools.Tools`.

    pg = PgBackup(host="db.staging", port=5432, user="postgres", password=resolved)
    pg.dump("mlflow", "/backups/mlflow.dump")                 # custom format (pg_restore can read it)
    pg.contents("/backups/mlflow.dump")                       # the archive's table of contents
    pg.restore("mlflow", "/backups/mlflow.dump")              # --clean --if-exists, one transaction
    pg.row_counts("mlflow")                                   # {"public.runs": 12, ...}

A custom/tar/directory archive is restored with ``pg_restore``; a plain SQL dump (text) with ``psql``
(``ON_ERROR_STOP``, one transaction). The password goes to the tools through ``PGPASSWORD`` in their
environment, never on a command line nor in an error message. Errors are ours: ``CommandFailed`` (the
tool's stderr verbatim), ``TimedOut``, ``NotFound`` (no such backup file).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbook.clients.tools import Tools
from opsbook.errors import CommandFailed, NotFound, TimedOut

__all__ = ["PgBackup", "PG_BIN_DIRS", "dump_format"]

#: Debian's versioned binary folders, searched after the venv and PATH (newest first).
PG_BIN_DIRS = sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True) \
    if Path("/usr/lib/postgresql").is_dir() else []


def dump_format(path: str | os.PathLike[str]) -> str:
    """``custom`` (``PGDMP`` magic), ``directory`` (a folder with ``toc.dat``), ``tar`` or ``plain`` (SQL)."""
    p = Path(path)
    if p.is_dir():
        return "directory" if (p / "toc.dat").exists() else "unknown"
    with open(p, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PGDMP"):
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "plain"


@dataclass
class PgBackup:
    """One PostgreSQL server reached as ``user`` (password optional), for dumps and restores."""

    host: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    tools: Tools | None = None
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.tools is None:
            self.tools = Tools(extra_dirs=PG_BIN_DIRS)

    # -- plumbing ------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        # what we pass wins over the caller's libpq environment (PGSSLMODE, PGSSLROOTCERT... are kept)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE")}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = "10"
        return env

    def _conn_args(self, dbname: str | None = None) -> list[str]:
        args = ["-h", self.host, "-p", str(self.port), "-U", self.user, "-w"]
        if dbname is not None:
            args += ["-d", dbname]
        return args

    def run(self, tool: str, args: list[str], *, timeout: float | None = None, stdin: Any = None) -> str:
        """Run a PostgreSQL tool; stdout, or CommandFailed with its stderr (the password is never in argv)."""
        assert self.tools is not None
        path = self.tools.which(tool)
        if path is None:
            raise CommandFailed(f"{tool} is not installed (searched the venv, PATH and /usr/lib/postgresql/*/bin)",
                                command=[tool])
        limit = timeout or self.timeout
        try:
            proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=limit, env=self._env(),
                                  stdin=stdin)
        except subprocess.TimeoutExpired as exc:
            raise TimedOut(f"{tool} did not finish in {limit:g} s") from exc
        if proc.returncode != 0:
            raise CommandFailed(f"{tool} exited {proc.returncode}", command=[path, *args],
                                returncode=proc.returncode, stderr=proc.stderr)
        return proc.stdout

    def version(self, tool: str = "pg_restore") -> str:
        return self.run(tool, ["--version"]).strip()

    # -- backups -------------------------------------------------------------------------------
    def dump(self, dbname: str, path: str | os.PathLike[str], *, fmt: str = "custom") -> Path:
        """``pg_dump`` of ``dbname`` into ``path`` (``custom`` or ``plain``)."""
        flag = {"custom": "-Fc", "plain": "-Fp", "tar": "-Ft"}[fmt]
        self.run("pg_dump", [*self._conn_args(dbname), flag, "--no-owner", "-f", str(path)])
        return Path(path)

    def contents(self, path: str | os.PathLike[str]) -> list[dict[str, str]]:
        """The archive's table of contents (``pg_restore -l``): one row per entry (type, schema, name).
        For a plain SQL dump: the ``CREATE TABLE`` / ``COPY`` statements found in it."""
        p = Path(path)
        if not p.exists():
            raise NotFound(f"backup file {p} does not exist")
        fmt = dump_format(p)
        rows: list[dict[str, str]] = []
        if fmt == "plain":
            with open(p, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("CREATE TABLE "):
                        name = line.split()[2]
                        schema, _, table = name.rpartition(".")
                        rows.append({"type": "TABLE", "schema": schema or "public", "name": table})
                    elif line.startswith("COPY "):
                        name = line.split()[1]
                        schema, _, table = name.rpartition(".")
                        rows.append({"type": "TABLE DATA", "schema": schema or "public", "name": table})
            return rows
        for line in self.run("pg_restore", ["-l", str(p)]).splitlines():
            if not line.strip() or line.startswith(";"):
                continue
            # "215; 1259 16390 TABLE public items postgres"
            head, _, rest = line.partition(" ")
            parts = rest.split()
            if len(parts) < 3:
                continue
            body = parts[2:]
            for typ in ("TABLE DATA", "SEQUENCE SET", "FK CONSTRAINT", "DEFAULT ACL", "TABLE", "SEQUENCE",
                        "INDEX", "CONSTRAINT", "SCHEMA", "VIEW", "FUNCTION", "EXTENSION", "COMMENT", "DEFAULT"):
                words = typ.split()
                if body[:len(words)] == words:
                    rest_words = body[len(words):]
                    rows.append({"type": typ, "schema": rest_words[0] if rest_words else "",
                                 "name": rest_words[1] if len(rest_words) > 1 else ""})
                    break
        return rows

    def restore(self, dbname: str, path: str | os.PathLike[str], *, clean: bool = True) -> dict[str, Any]:
        """Restore ``path`` into ``dbname`` in one transaction: ``pg_restore --clean --if-exists`` for
        an archive, ``psql -v ON_ERROR_STOP=1 --single-transaction -f`` for a plain SQL dump (which
        must itself drop what it recreates, i.e. be made with ``pg_dump --clean``)."""
        p = Path(path)
        if not p.exists():
            raise NotFound(f"backup file {p} does not exist")
        fmt = dump_format(p)
        if fmt == "plain":
            self.run("psql", [*self._conn_args(dbname), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                              "-f", str(p)])
            return {"tool": "psql", "format": fmt, "file": str(p), "database": dbname}
        args = [*self._conn_args(dbname), "--no-owner", "--single-transaction", "--exit-on-error"]
        if clean:
            args += ["--clean", "--if-exists"]
        self.run("pg_restore", [*args, str(p)])
        return {"tool": "pg_restore", "format": fmt, "file": str(p), "database": dbname}

    def row_counts(self, dbname: str, tables: list[str] | None = None) -> dict[str, int]:
        """Exact row counts (``count(*)``) of ``tables`` (``schema.table``), default every user table."""
        if tables is None:
            out = self.run("psql", [*self._conn_args(dbname), "-X", "-A", "-t", "-c",
                                    "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN "
                                    "('pg_catalog', 'information_schema') ORDER BY 1"])
            tables = [t.strip() for t in out.splitlines() if t.strip()]
        counts: dict[str, int] = {}
        for t in tables:
            schema, _, table = t.rpartition(".")
            ident = ".".join('"' + part.replace('"', '""') + '"' for part in (schema or "public", table))
            try:
                out = self.run("psql", [*self._conn_args(dbname), "-X", "-A", "-t", "-c",
                                        f"SELECT count(*) FROM {ident}"])
                counts[f"{schema or 'public'}.{table}"] = int(out.strip() or 0)
            except CommandFailed:
                counts[f"{schema or 'public'}.{table}"] = -1  # missing
        return counts
