"""``camwatch run`` with ``store.backend: postgresql`` against the simulator: states and
transitions land in a real PostgreSQL, a second daemon on the same database is refused naming
the first, the DSN's password never appears in the log, and a restart starts from the
committed states (no transition for a channel that did not change)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from camwatch.secrets import Secret
from camwatch.sim.model import Fault
from camwatch.store.postgres import APPLICATION_ID, PostgresStore
from tests.conftest import ROOT
from tests.fleet_thread import FleetThread
from tests.test_daemon import Proc, get, poll
from tests.test_sweep_cli import write_site


def test_daemon_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn + "\n")
    dsn_file.chmod(0o600)
    faults = [Fault.NONE] * 8 + [Fault.AUTH_FAIL, Fault.NOT_FOUND]
    with FleetThread(faults) as fleet:
        cfg = write_site(tmp_path, fleet.ports,
                         "probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, "
                         "onvif: false}\nstates: {fail_threshold: 1}\n"
                         f"store: {{backend: postgresql, dsn_file: {dsn_file}}}\n")
        proc = Proc(cfg)
        try:
            def offline() -> bool:
                code, body = get(proc.base + "/api/channels?state=offline")
                return code == 200 and json.loads(body)["total"] == 2

            poll("two offline channels", offline)
            second = subprocess.run(
                [sys.executable, "-m", "camwatch", "run", "-c", str(cfg), "--listen",
                 "127.0.0.1:0", *(["--allow-root"] if os.geteuid() == 0 else [])],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert second.returncode == 1
            assert f"another camwatch is running on this store (camwatch pid {proc.p.pid}, " \
                   f"listening on 127.0.0.1:0)" in second.stderr
            assert password not in second.stderr

            # the lock's session ends (a server restart) and another client takes the lock
            # before the daemon's check (every 10 s) does: /healthz says so, until it is free
            taker = psycopg.connect(pg_dsn, autocommit=True)
            try:
                with psycopg.connect(pg_dsn, autocommit=True) as db:
                    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                               "application_name LIKE 'camwatch pid %%, listening on %%'")
                taker.execute("SELECT pg_advisory_lock(%s, 0)", (APPLICATION_ID,))

                def lock_problem() -> bool:
                    code, body = get(proc.base + "/healthz")
                    return code == 503 and "store's lock was lost" in body

                poll("/healthz to report the lost lock", lock_problem, seconds=60)
            finally:
                taker.close()
            poll("/healthz ok again", lambda: get(proc.base + "/healthz")[0] == 200,
                 seconds=60)
            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(timeout=30) == 0
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()
        log = proc.stderr_path.read_text("utf-8")
        assert password not in log

        store = PostgresStore(Secret(pg_dsn))
        states = store.load_states()
        assert len(states) == 10
        assert sorted(s.reason or "" for s in states.values() if s.state == "offline") == [
            "auth", "not_found"]
        before = list(store.transitions())
        assert len(before) == 10  # unknown -> online or offline, once each
        store.close()

        proc = Proc(cfg)  # a restart on the same database
        try:
            poll("three rounds of probes after the restart", lambda: _probes(proc) >= 30)
            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(timeout=30) == 0
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()
        store = PostgresStore(Secret(pg_dsn))
        assert list(store.transitions()) == before
        store.close()


def _probes(proc: Proc) -> int:
    _code, body = get(proc.base + "/metrics")
    return sum(int(float(line.split()[-1])) for line in body.splitlines()
               if line.startswith("camwatch_probes_total{"))
