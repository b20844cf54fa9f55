"""A real PostgreSQL for the tests: its own cluster in a temporary directory (initdb + pg_ctl,
Debian package ``postgresql``), listening on 127.0.0.1 on a free port and on a socket in that
directory, with password (SCRAM) authentication so that the DSN carries a password as in
production. Never the machine's own PostgreSQL.

initdb refuses to run as root: as root, the cluster belongs to ``nobody`` (``runuser``)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and pg_ctl, else None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if Path(p).with_name("pg_ctl").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    USER = "camwatch"

    def __init__(self, bindir: Path, fsync: bool = False) -> None:
        """``fsync=False`` for the tests (a crash of the machine is not what they test);
        the bench turns it on, as in production."""
        self.bindir = bindir
        self.password = "pw-" + secrets.token_hex(8)
        # as root the cluster's user must reach it: /tmp, not a TMPDIR only root can enter
        root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="camwatch-pg-", dir="/tmp" if root else None))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if root:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root needs runuser (util-linux) for initdb")
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = [runuser, "-u", "nobody", "--"]
        os.chmod(self.dir, 0o700)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self._as:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "-N")
        pwfile.unlink()
        self.port = 0
        for _ in range(5):  # a port found free may be taken before the server binds it
            port = _free_port()
            sync = "on" if fsync else "off"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                          "-t", "60", "-o",
                          f"-c listen_addresses=127.0.0.1 -p {port} "
                          f"-c unix_socket_directories={self.dir} -c fsync={sync} "
                          f"-c max_connections=60", "start")
            except subprocess.CalledProcessError:
                continue
            self.port = port
            break
        if not self.port:
            log = (self.dir / "log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {log}")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bindir / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def dsn(self, dbname: str = "postgres") -> str:
        return (f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"
                f"?connect_timeout=10")

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test; its DSN. Dropped afterwards."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}".encode())
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.dsn(), autocommit=True) as db:
                db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())

    def stop(self) -> None:
        if self.port:
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
            self.port = 0
        shutil.rmtree(self.dir, ignore_errors=True)
