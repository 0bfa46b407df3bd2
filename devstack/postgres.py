"""A throwaway PostgreSQL cluster on 127.0.0.1, run as user postgres."""
import os
import pwd
import shutil
import signal
import subprocess

import psycopg

from devstack.install import postgres_bindir
from devstack.service import Service, as_user

SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",                 # speed; a test never pulls the power
    "full_page_writes": "off",
    "synchronous_commit": "on",     # a committed row must survive kill -9
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class PostgresServer(Service):
    name = "postgres"
    os_user = "postgres"

    def __init__(self, port: int | None = None):
        super().__init__(port)
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run `python -m devstack install`")
        self.data_dir = self.base_dir / "data"
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self._initdb()

    def _initdb(self) -> None:
        cmd = as_user(self.os_user) + [f"{self.bindir}/initdb", "-D", str(self.data_dir), "-U", "postgres",
                                       "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def command(self) -> list[str]:
        options = [arg for key, value in SERVER_OPTIONS.items() for arg in ("-c", f"{key}={value}")]
        return as_user(self.os_user) + [f"{self.bindir}/postgres", "-D", str(self.data_dir),
                                        "-p", str(self.port), "-k", str(self.base_dir)] + options

    def graceful_signal(self) -> int:
        return signal.SIGINT  # "fast" shutdown: roll back open transactions, then stop

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str, params=None) -> list:
        """Run one statement as superuser in autocommit mode (CREATE/DROP DATABASE...)."""
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def tool(self, name: str) -> str:
        """Path of a client tool (pg_dump, psql) of the same major version as the server."""
        return f"{self.bindir}/{name}" if os.path.exists(f"{self.bindir}/{name}") else shutil.which(name)


class PostgresStandby(PostgresServer):
    """A streaming standby of `primary`, copied with `pg_basebackup -R` (read-only until promote())."""

    def __init__(self, primary: PostgresServer, port: int | None = None):
        self.primary = primary
        super().__init__(port)

    def _initdb(self) -> None:
        cmd = as_user(self.os_user) + [f"{self.bindir}/pg_basebackup", "-D", str(self.data_dir), "-R",
                                       "-X", "stream", "-c", "fast", "-h", "127.0.0.1",
                                       "-p", str(self.primary.port), "-U", "postgres", "--no-sync"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed:\n{result.stdout}\n{result.stderr}")

    def in_recovery(self) -> bool:
        return self.admin("SELECT pg_is_in_recovery() AS r")[0][0]

    def promote(self) -> None:
        """pg_ctl promote: the standby becomes a primary that takes writes (about 0.1 s here)."""
        cmd = as_user(self.os_user) + [f"{self.bindir}/pg_ctl", "promote", "-w", "-D", str(self.data_dir)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed:\n{result.stdout}\n{result.stderr}")
