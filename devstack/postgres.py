"""The embedded default Postgres: a private cluster the project starts itself.

It uses the machine's PostgreSQL binaries (``pg_config --bindir`` or
``/usr/lib/postgresql/<v>/bin``); ``scripts/ensure_postgres.sh`` installs them
when missing. Postgres refuses to run as root, so as root the cluster runs as
the ``postgres`` OS user. Any number of processes may call ``ensure_running``
at once: a file lock serialises initdb and start.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = int(os.environ.get("LOCAL_PG_PORT", "61433"))  # outside the ephemeral port range (32768-60999)
SUPERUSER = "postgres"


def find_bindir() -> Path:
    candidates = [os.environ.get("PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "No PostgreSQL server binaries found (initdb). Run scripts/ensure_postgres.sh "
        "or set PG_BINDIR, or point WAREHOUSE_URL at an existing Postgres."
    )


class LocalPostgres:
    """A cluster under ``.local/pg`` (or a /tmp twin when the postgres user cannot reach it)."""

    def __init__(self, port: int = DEFAULT_PORT, root: Path | None = None):
        self.port = port
        self.root = root or PROJECT_ROOT / ".local" / "pg"
        self.run_as = SUPERUSER if os.geteuid() == 0 else None
        self.data_dir = self._choose_data_dir()

    # -- paths and users -------------------------------------------------
    def _choose_data_dir(self) -> Path:
        preferred = self.root / "data"
        if self.run_as is None:
            return preferred
        # The postgres user must be able to traverse every parent folder.
        probe = self.root
        probe.mkdir(parents=True, exist_ok=True)
        reachable = subprocess.run(["runuser", "-u", self.run_as, "--", "test", "-x", str(probe)]).returncode == 0
        if reachable:
            return preferred
        digest = hashlib.sha1(str(PROJECT_ROOT).encode()).hexdigest()[:10]
        return Path("/tmp") / f"ecomsync-pg-{digest}" / "data"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.run_as, "--"] if self.run_as else []) + list(args)

    def _ensure_os_user(self) -> None:
        if self.run_as is None:
            return
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self.run_as], check=True)

    @contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- lifecycle -------------------------------------------------------
    @property
    def server_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    def is_running(self) -> bool:
        try:
            # A stopped server refuses at once; the timeout only matters for a busy one (2 cores, many tests).
            psycopg2.connect(self.url("postgres"), connect_timeout=15).close()
            return True
        except psycopg2.OperationalError:
            return False

    def ensure_running(self) -> LocalPostgres:
        if self.is_running():
            return self
        with self._lock():
            if self.is_running():
                return self
            bindir = find_bindir()
            self._ensure_os_user()
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            if self.run_as:
                shutil.chown(self.data_dir.parent, user=self.run_as)
            if not (self.data_dir / "PG_VERSION").exists():
                subprocess.run(
                    self._cmd(str(bindir / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                              "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"),
                    check=True, capture_output=True,
                )
            # A stale pid file from a killed cluster would block the start; a live postmaster's is not stale
            # (a server too busy to answer in time, or still starting): wait for it instead.
            pid_file = self.data_dir / "postmaster.pid"
            if pid_file.exists():
                status = subprocess.run(self._cmd(str(bindir / "pg_ctl"), "status", "-D", str(self.data_dir)),
                                        capture_output=True)
                if status.returncode == 0:
                    for _ in range(60):
                        if self.is_running():
                            return self
                        time.sleep(1)
                    raise RuntimeError(f"local Postgres runs but does not answer; see {self.data_dir / 'server.log'}")
                pid_file.unlink()
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} "
                       "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            subprocess.run(
                self._cmd(str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                          "-l", str(self.data_dir / "server.log"), "-w", "-t", "60", "start"),
                check=True, capture_output=True,
            )
            for _ in range(60):
                if self.is_running():
                    return self
                time.sleep(0.5)
        raise RuntimeError(f"local Postgres did not start; see {self.data_dir / 'server.log'}")

    def stop(self) -> None:
        if (self.data_dir / "PG_VERSION").exists() and self.is_running():
            subprocess.run(self._cmd(str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"),
                           check=False, capture_output=True)

    def ensure_database(self, name: str) -> str:
        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        except psycopg2.errors.UniqueViolation:
            pass  # created concurrently by another process
        finally:
            conn.close()
        return self.url(name)

    def drop_database(self, name: str) -> None:
        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        finally:
            conn.close()


def _has_c_utf8() -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return any(line.lower() in ("c.utf8", "c.utf-8") for line in out.stdout.splitlines())


if __name__ == "__main__":
    import sys

    pg = LocalPostgres()
    if sys.argv[1:] == ["stop"]:
        pg.stop()
    else:
        pg.ensure_running()
        print(pg.server_url)
