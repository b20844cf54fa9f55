"""The issue's test: three ``camwatch run`` processes sharing one inventory on one real
PostgreSQL (the ``pg_dsn`` fixture) against the project's simulator. Each shard is owned
exactly once and each channel probed by exactly one instance; ``kill -9`` of one instance and
its shards are taken over by the standby within ``cluster.takeover``; the taken-over
channels continue from the committed states (no spurious transition), a channel that fails
after the kill gets exactly one transition from its new owner, and the whole transition log
is a chain per channel (no gap, no duplicate).

With alerts, against a real webhook receiver on loopback: ``kill -9`` of the instance that
owns a firing alert and delivers the outbox while an alert of it waits in the outbox (the
receiver failing): the next deliverer sends the waiting one once, the new owner of the
shard does not fire the firing one again, and sends its resolution when its channel comes
back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from camwatch.cluster.shard import split
from camwatch.inventory import load_inventory
from camwatch.sim.model import Fault
from tests.conftest import ROOT
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import Proc, get, poll
from tests.webhook import WebhookReceiver, running

SHARDS = 4
TAKEOVER_S = 6.0
TOWNSHIPS = [f"镇{i}" for i in range(12)]


def api(proc: Proc, path: str) -> Any:
    code, body = get(proc.base + path)
    assert code == 200, body
    return json.loads(body)


def start(tmp: Path, name: str, ports: list[int], dsn_file: Path,
          alerts: str = "alerts: {enabled: false}\n") -> Proc:
    d = tmp / name
    d.mkdir()
    rows = [Row(f"rtsp://127.0.0.1:{port}/ch", township=TOWNSHIPS[i % len(TOWNSHIPS)])
            for i, port in enumerate(ports)]
    cfg = write_site(d, rows,
                     "probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, "
                     "onvif: false}\nstates: {fail_threshold: 1}\n" + alerts +
                     f"store: {{backend: postgresql, dsn_file: {dsn_file}}}\n"
                     f"cluster: {{enabled: true, shard_by: township, shards: {SHARDS}, "
                     f"max_shards_per_instance: 2, takeover: {TAKEOVER_S:g}s, "
                     f"instance: {name}}}\n")
    return Proc(cfg)


def owned(proc: Proc) -> list[int]:
    return list(api(proc, "/api/cluster")["owned"])


def chains(dsn: str) -> dict[str, list[tuple[float, str, str]]]:
    with psycopg.connect(dsn) as db:
        rows = db.execute("SELECT channel_id, ts, from_state, to_state FROM transitions "
                          "ORDER BY channel_id, ts, id").fetchall()
    out: dict[str, list[tuple[float, str, str]]] = {}
    for cid, ts, a, b in rows:
        out.setdefault(cid, []).append((ts, a, b))
    return out


def assert_chains(log: dict[str, list[tuple[float, str, str]]]) -> None:
    """Per channel: starts from unknown, each transition leaves the state the previous one
    entered (no gap), and never enters the state it is in (no duplicate)."""
    for cid, seq in log.items():
        state = "unknown"
        for _, a, b in seq:
            assert a == state, f"{cid}: gap, {a} after {state}: {seq}"
            assert b != a, f"{cid}: duplicate {a}->{b}: {seq}"
            state = b


def test_three_instances_share_shards_and_take_over(tmp_path: Path, pg_dsn: str) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn + "\n")
    dsn_file.chmod(0o600)
    faults = [Fault.NONE] * 22 + [Fault.AUTH_FAIL, Fault.NOT_FOUND]
    procs: list[Proc] = []
    with FleetThread(faults) as fleet:
        try:
            a = start(tmp_path, "cw-a", fleet.ports, dsn_file)
            procs.append(a)
            poll("cw-a owns two shards", lambda: len(owned(a)) == 2)
            b = start(tmp_path, "cw-b", fleet.ports, dsn_file)
            procs.append(b)
            poll("cw-b owns two shards", lambda: len(owned(b)) == 2)
            c = start(tmp_path, "cw-c", fleet.ports, dsn_file)  # the standby
            procs.append(c)

            inv = load_inventory(load_config_of(tmp_path / "cw-a"))
            parts = split([ch for ch in inv.channels if ch.connected], "township", SHARDS)
            assert sorted(parts) == list(range(SHARDS))  # every shard has channels
            shard_of_channel = {ch.id: s for s, chans in parts.items() for ch in chans}

            # each shard owned exactly once, as PostgreSQL's lock table says
            view = api(c, "/api/cluster")["cluster"]
            assert view["unowned"] == [] and len(view["owners"]) == SHARDS
            assert sorted(owned(a) + owned(b)) == list(range(SHARDS)) and owned(c) == []
            assert {i["instance"] for i in view["instances"]} == {"cw-a", "cw-b", "cw-c"}

            # each channel probed by exactly one instance: its shard's owner
            def judged(proc: Proc) -> dict[str, str]:
                doc = api(proc, "/api/channels?limit=1000")
                return {ch["id"]: ch["state"] for ch in doc["channels"]}

            poll("every channel judged by its owner", lambda: all(
                "unknown" not in judged(p).values() for p in (a, b)) and
                len(judged(a)) + len(judged(b)) == len(shard_of_channel))
            held = {p: judged(p) for p in (a, b, c)}
            assert held[c] == {}
            assert set(held[a]).isdisjoint(held[b])
            for p in (a, b):
                assert {shard_of_channel[cid] for cid in held[p]} == set(owned(p))
            metrics = get(a.base + "/metrics")[1]
            assert "camwatch_cluster_shards_owned 2\n" in metrics
            for s in range(SHARDS):
                line = f'camwatch_cluster_shard_owner{{shard="{s}",instance="cw-a"}} '
                assert f"{line}{1 if s in owned(a) else 0}\n" in metrics

            poll("the first states committed", lambda: sum(
                len(v) for v in chains(pg_dsn).values()) >= len(shard_of_channel))
            before = chains(pg_dsn)
            assert_chains(before)
            a_shards, a_channels = owned(a), sorted(held[a])
            # one of cw-a's channels that is online now fails while nobody probes it
            victim = next(cid for cid in a_channels if held[a][cid] == "online")
            killed_at = time.time()
            a.p.send_signal(signal.SIGKILL)
            a.p.wait()
            fleet.set_fault(int(victim[-4:]), Fault.AUTH_FAIL)

            poll("cw-c takes cw-a's shards over", lambda: owned(c) == a_shards,
                 seconds=TAKEOVER_S * 5)
            with psycopg.connect(pg_dsn) as db:
                taken = db.execute("SELECT shard, from_instance, to_instance, ts FROM "
                                   "cluster_takeovers ORDER BY shard").fetchall()
            assert [(s, f, t) for s, f, t, _ in taken] == [(s, "cw-a", "cw-c")
                                                           for s in a_shards]
            assert max(ts for *_, ts in taken) - killed_at <= TAKEOVER_S
            assert owned(b) == sorted(set(range(SHARDS)) - set(a_shards))

            poll("the victim offline at its new owner",
                 lambda: judged(c).get(victim) == "offline", seconds=TAKEOVER_S * 5)
            poll("cw-c's channels judged", lambda: set(judged(c)) == set(a_channels) and
                 "unknown" not in judged(c).values())
            # the new owner's transitions are committed within a second or so
            poll("the victim's transition committed", lambda: chains(pg_dsn)[victim][-1][2]
                 == "offline")
            after = chains(pg_dsn)
            assert_chains(after)
            for cid in a_channels:  # nothing new but the victim's one real change
                new = after.get(cid, [])[len(before.get(cid, [])):]
                if cid == victim:
                    assert [(x, y) for _, x, y in new] == [("online", "offline")]
                else:
                    assert new == [], f"spurious transition of {cid}: {new}"
            view = api(c, "/api/cluster")["cluster"]
            assert view["unowned"] == []
            rows = {i["instance"]: i for i in view["instances"]}
            assert rows["cw-a"]["alive"] is False and rows["cw-c"]["takeovers"] == len(a_shards)
            shown = subprocess.run(
                [sys.executable, "-m", "camwatch", "status", "--cluster", "--url", c.base],
                capture_output=True, text=True, timeout=30, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert shown.returncode == 0, shown.stderr
            assert f"this instance: cw-c  owns shards {', '.join(map(str, a_shards))}" \
                in shown.stdout
            assert f"shards owned: {SHARDS}/{SHARDS}\n" in shown.stdout
            assert re.search(r"cw-a +NO ", shown.stdout) and re.search(r"cw-c +yes ", shown.stdout)
            for s in a_shards:
                assert re.search(rf"\s{s}\s+cw-a\s+cw-c\s*$", shown.stdout, re.M), shown.stdout

            # a reload reads the whole file again and keeps to the shards owned
            req = urllib.request.Request(c.base + "/api/reload", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:  # loopback only
                assert json.loads(resp.read()) == {"ok": True, "channels": len(a_channels)}
            assert set(judged(c)) == set(a_channels)

            # a graceful stop releases at once; cw-c is full (max 2), so cw-b's shards stay
            # unowned, and the view says so
            b_shards = owned(b)
            b.p.send_signal(signal.SIGTERM)
            assert b.p.wait(30) == 0
            poll("cw-b's shards unowned",
                 lambda: api(c, "/api/cluster")["cluster"]["unowned"] == b_shards)
            metrics = get(c.base + "/metrics")[1]
            for s in b_shards:  # what CamwatchShardUnowned sees: no instance says 1
                assert f'camwatch_cluster_shard_owner{{shard="{s}",instance="cw-c"}} 0\n' \
                    in metrics
        finally:
            for p in procs:
                if p.p.poll() is None:
                    p.p.kill()
                    p.p.wait()
                p.stderr.close()
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    for p in procs:
        assert password not in p.stderr_path.read_text("utf-8")


def load_config_of(d: Path) -> Any:
    from camwatch.config import load_config

    return load_config(d / "c.yaml").inventory



# --- alerts in a cluster ---------------------------------------------------------------------

class Receiver(WebhookReceiver):
    """The county's webhook on loopback: keeps every alert it accepts; answers 503 (a
    receiver that is down: camwatch keeps the item and retries) while ``down``."""

    def got(self, channel: str, status: str) -> int:
        return sum(1 for a in list(self.alerts) if a["labels"].get("channel") == channel
                   and a["status"] == status and a["name"] == "channel_offline_long")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running(Receiver()) as r:
        yield r


ALERTS = """alerts:
  rules:
    channel_offline_long: {after: 1s, renotify: null}
    rate_below_target: {enabled: false}
    mass_outage: {enabled: false}
    clock_drift: {enabled: false}
    prober_unhealthy: {enabled: false}
  default_receivers: [county]
  receivers:
    county: {type: webhook, url_env: CW_CLUSTER_HOOK}
  delivery: {backoff_initial: 100ms, backoff_max: 500ms, poll: 200ms}
"""


def outbox(dsn: str) -> list[tuple[str, str, int, float | None]]:
    """(fingerprint, status, attempts, delivered) of every outbox item, oldest first."""
    with psycopg.connect(dsn) as db:
        rows = db.execute("SELECT fingerprint, payload, attempts, delivered FROM alert_outbox "
                          "ORDER BY id").fetchall()
    return [(f, json.loads(p)["status"], n, d) for f, p, n, d in rows]


def test_alerts_survive_kill_9_of_their_owner_and_of_the_deliverer(
        tmp_path: Path, pg_dsn: str, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_CLUSTER_HOOK", f"http://127.0.0.1:{receiver.port}/h")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn + "\n")
    dsn_file.chmod(0o600)
    procs: list[Proc] = []
    with FleetThread([Fault.NONE] * 24) as fleet:
        try:
            a = start(tmp_path, "cw-a", fleet.ports, dsn_file, ALERTS)
            procs.append(a)
            poll("cw-a owns two shards", lambda: len(owned(a)) == 2)
            b = start(tmp_path, "cw-b", fleet.ports, dsn_file, ALERTS)
            procs.append(b)
            poll("cw-b owns two shards", lambda: len(owned(b)) == 2)
            c = start(tmp_path, "cw-c", fleet.ports, dsn_file, ALERTS)  # the standby
            procs.append(c)
            # cw-a started first: it holds the coordinator lock, so it delivers the outbox
            assert api(a, "/api/cluster")["coordinator"] is True
            assert not api(b, "/api/cluster")["coordinator"]

            def judged(proc: Proc) -> dict[str, str]:
                doc = api(proc, "/api/channels?limit=1000")
                return {ch["id"]: ch["state"] for ch in doc["channels"]}

            held = poll("cw-a's channels online", lambda: (j := judged(a)) and all(
                v == "online" for v in j.values()) and j)
            fired, waiting = sorted(held)[:2]  # both in cw-a's shards
            a_shards = owned(a)

            # an alert fires and is delivered: it is active in its shard's alert state
            fleet.set_fault(int(fired[-4:]), Fault.NOT_FOUND)
            poll("the first alert delivered", lambda: receiver.got(fired, "firing") == 1)
            # the receiver goes down; a second alert is committed and waits in the outbox
            receiver.down = True
            fleet.set_fault(int(waiting[-4:]), Fault.NOT_FOUND)
            # tried a few times (backoff 100-500 ms): by cw-a only, the one deliverer
            poll("the second alert tried and kept", lambda: receiver.refused >= 4 and any(
                n >= 1 and d is None for _, s, n, d in outbox(pg_dsn)))
            # the instance that owns both alerts and delivers the outbox dies
            a.p.send_signal(signal.SIGKILL)
            a.p.wait()
            receiver.down = False

            poll("cw-c takes cw-a's shards over", lambda: owned(c) == a_shards,
                 seconds=TAKEOVER_S * 5)
            poll("the waiting alert delivered by the next deliverer",
                 lambda: receiver.got(waiting, "firing") == 1, seconds=TAKEOVER_S * 5)
            coordinators = [p for p in (b, c) if api(p, "/api/cluster")["coordinator"]]
            assert len(coordinators) == 1
            deliverer = "cw-b" if coordinators[0] is b else "cw-c"
            assert api(c, "/api/cluster")["cluster"]["coordinator"] == deliverer
            shown = subprocess.run(
                [sys.executable, "-m", "camwatch", "status", "--cluster", "--url", b.base],
                capture_output=True, text=True, timeout=30, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert f"outbox delivered by: {deliverer}\n" in shown.stdout, shown.stdout
            poll("cw-c judges the failed channels",
                 lambda: judged(c).get(fired) == judged(c).get(waiting) == "offline")

            # the firing one comes back: cw-c, which never fired it, resolves it
            fleet.set_fault(int(fired[-4:]), Fault.NONE)
            poll("the resolution", lambda: receiver.got(fired, "resolved") == 1,
                 seconds=TAKEOVER_S * 5)
            poll("the outbox drained", lambda: all(d is not None for *_, d in outbox(pg_dsn)))
            # neither alert was fired again by the new owner, nor delivered twice
            assert receiver.got(fired, "firing") == 1
            assert receiver.got(waiting, "firing") == 1
            assert receiver.got(waiting, "resolved") == 0
            statuses = [(s, f) for f, s, _, _ in outbox(pg_dsn)]
            assert len(statuses) == 3 and len(set(statuses)) == 3, statuses
            first = next(x for x in receiver.alerts if x["labels"]["channel"] == fired)
            last = next(x for x in receiver.alerts if x["status"] == "resolved")
            assert last["fingerprint"] == first["fingerprint"]
            assert last["starts_at"] == first["starts_at"]
            assert any(e.get("event") == "alert state of the owned shards" and e["active"] == 2
                       for e in c.log())
            # only the deliverer of the moment ever talked to the receiver: cw-b and cw-c
            # never saw it failing (they did not deliver while cw-a did)
            for p in (b, c):
                assert not [e for e in p.log() if e.get("event") == "receiver failing; alerts "
                            "kept in the outbox"], p.stderr_path
            assert [e for e in a.log() if e.get("event") == "receiver failing; alerts kept in "
                    "the outbox"]
        finally:
            for p in procs:
                if p.p.poll() is None:
                    p.p.kill()
                    p.p.wait()
                p.stderr.close()
