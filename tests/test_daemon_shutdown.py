"""SIGTERM while every kind of receiver hangs: ``camwatch run`` still exits within 10 s, with
exit code 0, and the alerts it could not deliver stay in the outbox for the next start.

Each receiver points at a tarpit of its own on loopback: a TCP listener that accepts, reads
whatever comes and never answers (an MQTT broker that never sends CONNACK, robots and webhooks
that never send a status line). The test waits until every receiver has a connection open to
its tarpit, so the signal arrives while each one is mid-delivery."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from camwatch.sim.model import Fault
from camwatch.store import open_store
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import Proc, poll

RECEIVERS = ("mq", "wecom", "dingtalk", "hook", "am")


class Tarpit:
    """Accepts connections on a free loopback port and holds them, answering nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


def test_sigterm_with_every_receiver_hanging_exits_within_10s_and_keeps_the_outbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pits = {name: Tarpit() for name in RECEIVERS}
    for name in ("wecom", "dingtalk", "hook", "am"):
        monkeypatch.setenv(f"CW_TEST_{name.upper()}_URL",
                           f"http://127.0.0.1:{pits[name].port}/send?key=k")
    try:
        with FleetThread([Fault.NOT_FOUND] * 3 + [Fault.NONE] * 3) as fleet:
            rows = [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports]
            cfg = write_site(tmp_path, rows, f"""
probing: {{interval: 1s, timeout: 500ms, per_host_concurrency: 64, onvif: false}}
states: {{fail_threshold: 1}}
targets: {{min_channels: 2}}
store: {{path: state.db}}
alerts:
  rules:
    rate_below_target: {{for: 0s, scopes: [county/township]}}
    mass_outage: {{enabled: false}}
    channel_offline_long: {{enabled: false}}
  default_receivers: [{", ".join(RECEIVERS)}]
  receivers:
    mq: {{type: mqtt, host: 127.0.0.1, port: {pits["mq"].port}, prefix: lyx, timeout: 60s}}
    wecom: {{type: wecom, url_env: CW_TEST_WECOM_URL, timeout: 60s}}
    dingtalk: {{type: dingtalk, url_env: CW_TEST_DINGTALK_URL, timeout: 60s}}
    hook: {{type: webhook, url_env: CW_TEST_HOOK_URL, timeout: 60s}}
    am: {{type: alertmanager, url_env: CW_TEST_AM_URL, timeout: 60s}}
  delivery: {{backoff_initial: 100ms, backoff_max: 500ms, poll: 200ms}}
""")
            proc = Proc(cfg)
            try:
                poll("every receiver mid-delivery",
                     lambda: all(p.accepted >= 1 for p in pits.values()), 60)
                started = time.monotonic()
                proc.p.send_signal(signal.SIGTERM)
                code = proc.p.wait(timeout=15)
                took = time.monotonic() - started
            finally:
                if proc.p.poll() is None:
                    proc.p.kill()
                    proc.p.wait()
                proc.stderr.close()
    finally:
        for p in pits.values():
            p.close()
    assert code == 0, proc.stderr_path.read_text("utf-8")[-3000:]
    assert took < 10, f"took {took:.1f} s to stop"
    store = open_store(tmp_path / "state.db")
    try:
        # nothing was delivered, nothing was lost: each receiver's alert waits for the next start
        depth = {name: store.outbox_depth(name) for name in RECEIVERS}
    finally:
        store.close()
    assert all(d >= 1 for d in depth.values()), depth
    assert "key=k" not in proc.stderr_path.read_text("utf-8")
