"""A county in miniature for the repair-ticket tests: the real channel book, the real repair
desk, a real SQLite store written through the real store writer, and an injected clock.
Channels are judged every ``interval`` from what the test says each one is (ok, or down
with a reason), as the scheduler's verdicts would; no sockets, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camwatch.book import ChannelBook
from camwatch.config import Config, parse_config
from camwatch.inventory import Channel
from camwatch.model import Source, Verdict
from camwatch.probes.result import ProbeResult, Reason
from camwatch.quality.book import QualityBook
from camwatch.repairs.desk import RepairDesk, active_exemptions
from camwatch.repairs.model import TicketEvent
from camwatch.rules.alerts import alert_inputs
from camwatch.store.sqlite import SqliteStore
from camwatch.store.writer import StoreWriter

# 2026-11-01 00:00 in Asia/Shanghai (UTC+8)
NOV_1 = 1_793_462_400.0
H = 3600.0
M = 60.0
D = 86400.0


def config(**repairs: Any) -> Config:
    doc: dict[str, Any] = {
        "inventory": {"path": "inventory.csv"},
        "states": {"fail_threshold": 1, "recover_threshold": 1},
        "alerts": {"receivers": {"ops": {"type": "webhook", "url_env": "CW_TEST_OPS_URL"},
                                 "boss": {"type": "webhook", "url_env": "CW_TEST_BOSS_URL"}},
                   "rules": {"mass_outage": {"min_channels": 2, "share": "80%"}}},
        "repairs": {"enabled": True, "default_receivers": ["ops"],
                    "escalation_receivers": ["boss"],
                    "link_base": "http://127.0.0.1:9780", **repairs},
    }
    return parse_config(doc)


def channel(cid: str, township: str, village: str, operator: str, klass: int,
            host: str = "") -> Channel:
    return Channel(id=cid, name=f"点位{cid[-3:]}", klass=klass, project="雪亮工程",
                   county="鹿邑县", township=township, village=village, operator=operator,
                   installed=True, connected=True, host=host or f"h-{cid}")


@dataclass
class County:
    path: Path
    channels: list[Channel]
    cfg: Config = field(default_factory=config)
    interval: float = 5 * M
    t: float = NOV_1
    down: dict[str, Reason] = field(default_factory=dict)
    events: list[TicketEvent] = field(default_factory=list)
    quality: QualityBook | None = None  # the pictures' book, when sampling is on

    def __post_init__(self) -> None:
        self.store = SqliteStore(self.path)
        self.writer = StoreWriter(self.store, clock=lambda: self.t)
        self.writer.start()
        self.book = ChannelBook(self.cfg.states, self.interval, states=self.store.load_states())
        self.by_id = {c.id: c for c in self.channels}
        self.book.swap(self.by_id)
        self.desk = RepairDesk.from_store(self.cfg, self.store, self.writer)
        self.swap(self.channels)

    def swap(self, channels: list[Channel]) -> None:
        self.by_id = {c.id: c for c in channels}
        self.book.swap(self.by_id)
        levels = self.cfg.alerts.rules.mass_outage.levels
        inputs = alert_inputs(self.by_id, levels)  # as the engine hands them over
        self.desk.swap(self.by_id, inputs.groups, inputs.key_of, inputs.levels)

    def clock(self) -> float:
        return self.t

    def run_until(self, end: float) -> None:
        """Judge every channel and step the desk every ``interval`` up to ``end``."""
        asyncio.run(self._run(end))

    async def _run(self, end: float) -> None:
        while self.t + self.interval <= end + 1e-6:
            self.t += self.interval
            await self.tick()

    async def tick(self) -> None:
        now = self.t
        for cid in self.by_id:
            reason = self.down.get(cid)
            result = ProbeResult.success("describe") if reason is None else \
                ProbeResult.failure("describe", reason)
            self.book.judge(cid, Verdict.of(result, Source.DESCRIBE), now)
        states, trans = self.book.take_writes()
        self.writer.call(lambda s: s.write_batch(states, trans))
        exempt = active_exemptions(self.store, now)
        self.events += await self.desk.step(now, self.book.states, self.book.offline, exempt,
                                            self.quality)

    def act(self, no: int, action: str, by: str = "张三", note: str = "") -> None:
        async def go() -> None:
            _, evs = await self.desk.act(no, action, by, note, self.t)
            self.events += evs
        asyncio.run(go())

    def outbox(self, receiver: str) -> list[dict[str, Any]]:
        return [it.payload for it in self.store.due(receiver, self.t + 1e9, limit=10_000)]

    def close(self) -> None:
        self.writer.close()
        self.store.close()
