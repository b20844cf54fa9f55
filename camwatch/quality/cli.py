"""``camwatch diagnose``: sample channels' pictures now and print the verdicts.

The JSON (``--json``) is one object: ``channels``, a list of ``{"id", "quality":
"ok"|"degraded"|"unknown", "faults": [{"check", "score"}], "width", "height", "codec",
"latency_ms"}`` (plus ``reason`` and ``detail`` when unknown, and every check's ``scores``),
and ``summary`` with the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from camwatch.config import Config
from camwatch.errors import CamwatchError
from camwatch.inventory import Channel, Inventory
from camwatch.model import Quality
from camwatch.probes import ProbeSettings
from camwatch.quality.decode import DecodePool
from camwatch.quality.names import CHECK_ZH
from camwatch.quality.sample import QualityVerdict, SampleSettings, sample

__all__ = ["add_arguments", "cmd_diagnose", "diagnose_channels"]

NO_RTSP_URL = "no_rtsp_url"
QUALITY_ZH = {Quality.OK: "正常", Quality.DEGRADED: "异常", Quality.UNKNOWN: "未知"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="CONFIG",
                   help="camwatch's YAML config (start from config.example.yaml)")
    p.add_argument("--channel", action="append", metavar="ID", default=[],
                   help="sample this channel (repeatable; default: every connected channel)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--thumbnails", metavar="DIR", type=Path,
                   help="write each sampled picture to DIR/<id>.jpg")


def probe_settings(cfg: Config) -> ProbeSettings:
    return ProbeSettings(timeout_s=cfg.quality.timeout, user_agent=cfg.probing.user_agent)


async def diagnose_channels(cfg: Config, channels: Sequence[Channel],
                            progress: Callable[[int, int], None] | None = None
                            ) -> list[QualityVerdict]:
    """One sample of each channel, at most ``quality.max_concurrency`` at once."""
    from camwatch.sweep import make_target, resolve_credentials

    creds = resolve_credentials(cfg, channels)
    settings = SampleSettings.of(cfg.quality)
    probe = probe_settings(cfg)
    pool = DecodePool(cfg.quality.decode_workers)
    sem = asyncio.Semaphore(cfg.quality.max_concurrency)
    out: dict[str, QualityVerdict] = {}
    done = 0

    async def one(ch: Channel) -> None:
        nonlocal done
        if not ch.rtsp_url:
            out[ch.id] = QualityVerdict(ch.id, Quality.UNKNOWN, time.time(), reason=NO_RTSP_URL,
                                        detail="the inventory gives this channel no RTSP URL")
        else:
            async with sem:
                out[ch.id] = await sample(make_target(ch, creds), probe, settings, pool)
        done += 1
        if progress is not None:
            progress(done, len(channels))

    try:
        async with asyncio.TaskGroup() as tg:
            for ch in channels:
                tg.create_task(one(ch), name=f"diagnose:{ch.id}")
    finally:
        await asyncio.to_thread(pool.close)
    return [out[ch.id] for ch in channels]


def _select(channels: Sequence[Channel], wanted: Sequence[str]) -> list[Channel]:
    connected = [c for c in channels if c.connected]
    if not wanted:
        return connected
    by_id = {c.id: c for c in channels}
    picked: list[Channel] = []
    for cid in wanted:
        ch = by_id.get(cid)
        if ch is None:
            close = difflib.get_close_matches(cid, list(by_id), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CamwatchError(f"--channel {cid}: not in the inventory{hint}")
        if ch not in picked:
            picked.append(ch)
    return picked


def _faults_text(v: QualityVerdict) -> str:
    if v.quality is Quality.UNKNOWN:
        return f"{v.reason}: {v.detail}"[:80]
    return ", ".join(f"{CHECK_ZH.get(f.check, f.check)} {f.check} {f.score:g}"
                     for f in v.faults) or "-"


def cmd_diagnose(args: argparse.Namespace, cfg: Config, inv: Inventory,
                 run: Callable[[Coroutine[Any, Any, Any]], Any]) -> int:
    """``camwatch diagnose`` on a loaded config and inventory; ``run`` runs a coroutine to
    its end (the CLI's event loop)."""
    from camwatch.textui import Progress, table

    channels = _select(inv.channels, args.channel)
    progress = Progress("diagnose", enabled=False if args.json else None)
    verdicts: list[QualityVerdict] = run(diagnose_channels(cfg, channels, progress))
    if args.thumbnails is not None:
        args.thumbnails.mkdir(parents=True, exist_ok=True)
        for v in verdicts:
            if v.jpeg is not None:
                (args.thumbnails / f"{v.channel_id}.jpg").write_bytes(v.jpeg)
    counts = Counter(v.quality.value for v in verdicts)
    summary: dict[str, Any] = {"sampled": len(verdicts),
                               **{q.value: counts.get(q.value, 0) for q in Quality}}
    if args.json:
        doc = {"channels": [v.json() for v in verdicts], "summary": summary}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
        return 0
    names = {c.id: c.name for c in channels}
    rows = [[v.channel_id, names.get(v.channel_id, ""),
             f"{QUALITY_ZH[v.quality]} {v.quality.value}", _faults_text(v),
             f"{v.width}x{v.height}" if v.width else "-", v.codec or "-",
             f"{v.latency_ms:.0f}"] for v in verdicts]
    print(table(["设备编码 id", "点位名称", "质量 quality", "诊断 faults", "size", "codec",
                 "ms"], rows))
    print(f"\n{summary['sampled']} sampled: {summary['ok']} ok, {summary['degraded']} "
          f"degraded, {summary['unknown']} unknown")
    return 0
