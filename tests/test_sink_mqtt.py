"""MQTT end to end against a real mosquitto that the test starts on a free port: a rate driven
under target gives exactly one alert on the township's topic, one resolved message after
recovery; retained rates; the broker stopped and restarted loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.alerts import AlertEvaluator, alert_inputs
from camwatch.rules.rates import Targets, compute_rates
from camwatch.sinks.dispatch import Dispatcher
from camwatch.store.base import ChannelState
from camwatch.store.sqlite import SqliteStore
from tests.conftest import need, need_binary

pytestmark = pytest.mark.peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, binary: str, tmp: Path, listener: str = "") -> None:
        """``listener``: more lines for the listener (TLS: ``certfile``, ``keyfile``)."""
        self.binary = binary
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        data = tmp / "mosq-data"
        data.mkdir()
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{listener}allow_anonymous true\n"
            f"persistence true\npersistence_location {data}/\n"
            f"user {getpass.getuser()}\nlog_dest stderr\n")
        self.log = tmp / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                         stdout=out, stderr=out)
        end = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"mosquitto did not start: {self.log.read_text()}")
            time.sleep(0.02)  # polling a subprocess's port, with a deadline

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def mosquitto() -> str:
    # Debian installs it in /usr/sbin, which is not on every user's PATH
    sbin = Path("/usr/sbin/mosquitto")
    binary = shutil.which("mosquitto") or (str(sbin) if sbin.exists() else None)
    need(binary is not None, "the mosquitto binary")
    assert binary is not None
    return binary


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(mosquitto(), tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    """mosquitto with a TLS listener only, its certificate self-signed for 127.0.0.1 (which
    the clients are given as their CA file): the broker and the certificate."""
    cert, key = tmp_path / "broker.pem", tmp_path / "broker.key"
    subprocess.run([need_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    b = Broker(mosquitto(), tmp_path, f"certfile {cert}\nkeyfile {key}\n")
    b.start()
    yield b, cert
    b.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "camwatch.db")
    yield s
    s.close()


class Subscriber:
    """Collects messages; persistent session (QoS 1), so it reconnects after a broker
    restart and receives what was queued for it."""

    def __init__(self, port: int, topic: str, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.topic = topic
        self.tls = tls
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="county-app",
                                          clean_session=False, tls_context=self.tls) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append((str(m.topic), json.loads(m.payload), m.retain))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)  # reconnect loop

    async def __aenter__(self) -> Subscriber:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(cond: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(d: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mqtt_cfg(port: int, **rules: Any) -> AlertsConfig:
    return AlertsConfig.model_validate({
        "receivers": {"county_mqtt": {"type": "mqtt", "host": "127.0.0.1", "port": port,
                                      "prefix": "lyx", "timeout": "2s"}},
        "default_receivers": ["county_mqtt"],
        "rules": {"mass_outage": {"enabled": False},
                  "channel_offline_long": {"enabled": False}, **rules},
        "delivery": {"backoff_initial": "50ms", "backoff_max": "300ms", "poll": "100ms"}})


def channels(n: int) -> list[Channel]:
    return [Channel(id=f"c{i:04d}", klass=1, county="鹿邑县", township="城关镇",
                    village="王庄村", installed=True, connected=True, host=f"h{i}")
            for i in range(n)]


async def test_rate_alert_and_resolution_on_the_township_topic(
        broker: Broker, store: SqliteStore) -> None:
    cfg = mqtt_cfg(broker.port, rate_below_target={"scopes": ["county/township"]})
    targets = Targets(TargetsConfig())
    chs = channels(50)
    states = {c.id: ChannelState(c.id, "online", since=0.0) for c in chs}
    ev = AlertEvaluator(cfg, targets, 10)
    inputs = alert_inputs({c.id: c for c in chs}, cfg.rules.mass_outage.levels)
    t0 = 1_800_000_000.0
    clock = [t0]  # the evaluator's and the dispatcher's clock are one (enqueue stamps it)
    d = Dispatcher(cfg, store, clock=lambda: clock[0])

    def evaluate(now: float) -> int:
        clock[0] = now
        rates = compute_rates(chs, lambda cid: states[cid].state, targets)
        out = ev.evaluate(now, inputs, states, list(states), rates, [], [])
        store.commit_outbox(out.outbox, now, {})
        out.commit()
        n = len(out.events)
        d.notify()
        return n

    async with Subscriber(broker.port, "lyx/alerts/#") as sub, running(d):
        for c in chs[:3]:  # 47/50 = 94 %
            states[c.id] = ChannelState(c.id, "offline", reason="timeout", since=t0)
        assert evaluate(t0) == 0
        assert evaluate(t0 + 840) == 0
        assert evaluate(t0 + 900) == 1  # ``for`` + one evaluation
        await until(lambda: len(sub.messages) == 1, "the alert")
        for c in chs[:3]:
            states[c.id] = ChannelState(c.id, "online", since=t0 + 1000)
        assert evaluate(t0 + 1000) == 0
        assert evaluate(t0 + 1900) == 1
        await until(lambda: len(sub.messages) == 2, "the resolution")
        await until(lambda: store.outbox_depth() == 0, "the outbox to drain")
    (t1, a1, r1), (t2, a2, r2) = sub.messages
    assert t1 == t2 == "lyx/alerts/鹿邑县/城关镇" and not r1 and not r2
    assert a1["status"] == "firing" and a2["status"] == "resolved"
    assert a1["fingerprint"] == a2["fingerprint"]
    assert a1["summary"] == "鹿邑县 城关镇 一类视频监控在线率 94.00%，低于目标 98%（在线 47/50）"


async def test_retained_rates_seen_by_a_late_subscriber(broker: Broker,
                                                       store: SqliteStore) -> None:
    cfg = mqtt_cfg(broker.port)
    targets = Targets(TargetsConfig())
    chs = channels(20)
    state = {c.id: "online" for c in chs}
    state[chs[0].id] = "offline"
    d = Dispatcher(cfg, store)
    await d.publish_rates(compute_rates(chs, state.__getitem__, targets))
    state[chs[1].id] = "offline"  # latest wins
    await d.publish_rates(compute_rates(chs, state.__getitem__, targets))
    for s in d.sinks.values():
        await s.close()
    async with Subscriber(broker.port, "lyx/rates/#") as sub:
        await until(lambda: len(sub.messages) >= 4, "retained rates")
    got = {t: (p, retained) for t, p, retained in sub.messages}
    assert set(got) == {"lyx/rates/鹿邑县/all/all", "lyx/rates/鹿邑县/all/1",
                        "lyx/rates/鹿邑县/城关镇/all", "lyx/rates/鹿邑县/城关镇/1"}
    doc, retained = got["lyx/rates/鹿邑县/城关镇/1"]
    assert retained and doc["online"] == 18 and doc["connected"] == 20
    assert doc["rate_text"] == "90.00%" and doc["target"] == 0.98


async def test_broker_outage_loses_nothing(broker: Broker, store: SqliteStore) -> None:
    cfg = mqtt_cfg(broker.port)
    d = Dispatcher(cfg, store)

    def put(i: int) -> None:
        p: dict[str, Any] = {"version": 1, "name": "clock_drift", "fingerprint": f"fp{i:03d}",
             "severity": "info", "status": "firing", "starts_at": float(i), "ends_at": None,
             "labels": {"county": "鹿邑县", "township": "城关镇"}, "summary": f"#{i}",
             "details": {}}
        store.enqueue("county_mqtt", p["fingerprint"], p, time.time())
        d.notify()

    async with Subscriber(broker.port, "lyx/alerts/#") as sub, running(d):
        for i in range(5):
            put(i)
        await until(lambda: len(sub.messages) == 5, "the first five")
        broker.stop()
        for i in range(5, 25):  # the county keeps alerting while the broker is down
            put(i)
        await until(lambda: d.failed["county_mqtt"] >= 2, "failed attempts")
        assert store.outbox_depth("county_mqtt") == 20
        broker.start()
        await until(lambda: store.outbox_depth("county_mqtt") == 0, "the outbox to drain")
        await until(lambda: len({m[1]["fingerprint"] for m in sub.messages}) == 25,
                    "every message")
    fps = [m[1]["fingerprint"] for m in sub.messages]
    assert fps[:5] == [f"fp{i:03d}" for i in range(5)]
    # at least once, in order: a duplicate may repeat an item, never reorder or skip one
    firsts = sorted(set(fps), key=fps.index)
    assert firsts == [f"fp{i:03d}" for i in range(25)]


async def test_connection_broken_mid_batch_keeps_the_order(broker: Broker,
                                                           store: SqliteStore) -> None:
    """The TCP connection to a real broker is cut while a batch of alerts is in flight (the
    fault injected into the real socket on the batch's third PUBLISH): every alert arrives,
    and their first copies arrive in the order they were raised (16.17)."""
    import socket

    from camwatch.sinks.mqtt import MqttSink

    d = Dispatcher(mqtt_cfg(broker.port), store)
    sink = d.sinks["county_mqtt"]
    assert isinstance(sink, MqttSink) and sink.max_batch >= 5
    real_connect = sink._connect
    calls = 0
    cut = False

    async def connect_with_fault() -> Any:
        client = await real_connect()
        real_publish = client.publish

        async def publish(*args: Any, **kw: Any) -> None:
            nonlocal calls, cut
            calls += 1
            if calls == 3 and not cut:  # pull the plug under paho, once
                cut = True
                client._client.socket().shutdown(socket.SHUT_RDWR)
            await real_publish(*args, **kw)

        client.publish = publish  # type: ignore[method-assign]
        return client

    sink._connect = connect_with_fault  # type: ignore[method-assign]
    for i in range(10):
        p: dict[str, Any] = {"version": 1, "name": "clock_drift", "fingerprint": f"fp{i:03d}",
                             "severity": "info", "status": "firing", "starts_at": float(i),
                             "ends_at": None, "labels": {"county": "鹿邑县", "township": "城关镇"},
                             "summary": f"#{i}", "details": {}}
        store.enqueue("county_mqtt", p["fingerprint"], p, time.time())
    async with Subscriber(broker.port, "lyx/alerts/#") as sub, running(d):
        d.notify()
        await until(lambda: store.outbox_depth("county_mqtt") == 0, "the outbox to drain")
        await until(lambda: len({m[1]["fingerprint"] for m in sub.messages}) == 10,
                    "every message")
    assert cut and d.failed["county_mqtt"] >= 1
    fps = [m[1]["fingerprint"] for m in sub.messages]
    firsts = sorted(set(fps), key=fps.index)
    assert firsts == [f"fp{i:03d}" for i in range(10)]


def _alert(i: int) -> dict[str, Any]:
    return {"version": 1, "name": "clock_drift", "fingerprint": f"fp{i:03d}",
            "severity": "info", "status": "firing", "starts_at": float(i), "ends_at": None,
            "labels": {"county": "鹿邑县", "township": "城关镇"}, "summary": f"#{i}",
            "details": {}}


async def test_alerts_over_tls_to_a_broker_the_ca_file_vouches_for(
        tls_broker: tuple[Broker, Path], store: SqliteStore) -> None:
    """MQTT over TLS against mosquitto's TLS listener: with ``ca_file`` naming the broker's
    certificate the alerts and the retained rates arrive; without it (the system's CAs do not
    know a self-signed broker) the handshake is refused, classified, and the alerts wait in
    the outbox: nothing is sent in the clear, nothing lost."""
    broker, cert = tls_broker
    trusting = ssl.create_default_context(cafile=str(cert))

    def cfg(**tls: Any) -> AlertsConfig:
        c = mqtt_cfg(broker.port)
        recv = c.receivers["county_mqtt"].model_copy(update={"tls": True, **tls})
        return c.model_copy(update={"receivers": {"county_mqtt": recv}})

    untrusted = Dispatcher(cfg(), store)
    store.enqueue("county_mqtt", "fp000", _alert(0), time.time())
    async with running(untrusted):
        untrusted.notify()
        await until(lambda: untrusted.failed["county_mqtt"] >= 1, "a refused handshake")
    (waiting,) = store.due("county_mqtt", time.time() + 3600)
    error = waiting.last_error or ""
    assert waiting.fingerprint == "fp000" and waiting.attempts >= 1
    assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error, error

    d = Dispatcher(cfg(ca_file=cert), store)
    async with Subscriber(broker.port, "lyx/#", tls=trusting) as sub, running(d):
        store.enqueue("county_mqtt", "fp001", _alert(1), time.time())
        d.notify()
        await until(lambda: store.outbox_depth("county_mqtt") == 0, "the outbox to drain")
        chs = channels(4)
        await d.publish_rates(compute_rates(chs, lambda cid: "online",
                                            Targets(TargetsConfig())))
        await until(lambda: {"fp000", "fp001"} <= {m[1].get("fingerprint")
                                                   for m in sub.messages}, "both alerts")
        await until(lambda: any(t.startswith("lyx/rates/") for t, _, _ in sub.messages),
                    "the rates")
    alerts = [m for m in sub.messages if m[0].startswith("lyx/alerts/")]
    assert [a[1]["fingerprint"] for a in alerts][:2] == ["fp000", "fp001"]  # in order
    assert alerts[0][0] == "lyx/alerts/鹿邑县/城关镇"
