"""CPU cost of one quality sample: ``python bench/bench_quality.py [--n 10]``.

For 720p and 1080p, H.264 and H.265: a camera-like stream (a textured scene panning, with
sensor noise; 25 fps, a keyframe every 2 s, 4 Mbit/s at 1080p and 2 Mbit/s at 720p, encoded
once with PyAV's libx264 / libx265) is served in real time by a small RTSP server in a child
process (its CPU not counted). This process then takes ``--n`` samples as the daemon does:
the keyframe fetch (two keyframes, one GOP apart), decoding both, the checks and the thumbnail
JPEG; ``--one-frame``: one keyframe, as with ``quality.second_frame: false``). Printed, per
sample: this process's CPU time (``time.process_time``: user + system, all
threads) for the fetch and for the picture work apart, their sum, the wall time, and what
10,000 channels sampled hourly would cost in cores (sum x 10,000 / 3,600 s); before and after,
the CPU time of a fixed workload that is none of camwatch's code, the machine's speed of the
minute (figures taken at different times compare only in its light). The samples run
under uvloop, the daemon's event loop (``camwatch run``); ``--loop asyncio`` for the standard
one (the fetch costs ~2-3 ms more a 1080p sample there). The C heap is set as the daemon sets
it while it samples (``camwatch.malloc``: tune_malloc, then the threshold for 640-px pictures);
``--malloc default`` leaves glibc's own settings.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import multiprocessing as mp
import statistics
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import uvloop

from camwatch.malloc import set_picture_threshold, tune_malloc
from camwatch.probes import ProbeSettings, Target
from camwatch.probes.keyframe import fetch_keyframes
from camwatch.quality.checks import diagnose, thumbnail
from camwatch.quality.decode import decode, thumbnail_jpeg
from camwatch.quality.sample import SampleSettings, _process
from tests import quality_images as qi
from tests.rtp_packetize import Packetizer

FPS, GOP, SECONDS = 25, 50, 4
SIZES = {"720p": (1280, 720, 2_000_000), "1080p": (1920, 1080, 4_000_000)}


def encode(width: int, height: int, bitrate: int, codec: str) -> list[bytes]:
    ctx = av.CodecContext.create("libx264" if codec == "H264" else "libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.bit_rate = bitrate
    params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:repeat-headers=1"
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency",
                   ("x264-params" if codec == "H264" else "x265-params"):
                   params + (":log-level=none" if codec == "H265" else "")}
    base = qi.scene(width + 64, height, seed=4)
    out: list[bytes] = []
    for i in range(FPS * SECONDS):
        img = base[:, i % 64:i % 64 + width]
        vf = av.VideoFrame.from_ndarray(img.copy(), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        out += [bytes(p) for p in ctx.encode(vf)]  # type: ignore[attr-defined]
    out += [bytes(p) for p in ctx.encode(None)]  # type: ignore[attr-defined]
    return out


def serve(conn: Connection, streams: dict[str, tuple[str, list[bytes]]]) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = None
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method, url, _ = head.split(" ", 2)
                cseq = head.lower().split("cseq:", 1)[1].split("\r\n", 1)[0].strip()
                name = url.split("/")[3]
                codec, aus = streams[name]
                extra, body = "", b""
                if method == "DESCRIBE":
                    body = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=b\r\nt=0 0\r\nm=video 0 RTP/AVP"
                            f" 96\r\na=rtpmap:96 {codec}/90000\r\na=control:t1\r\n").encode()
                    extra = f"Content-Base: {url}/\r\nContent-Length: {len(body)}\r\n"
                elif method == "SETUP":
                    extra = "Session: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n"
                writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n".encode() + body)
                if method == "PLAY":
                    task = asyncio.ensure_future(play(writer, codec, aus))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if task is not None:
                task.cancel()
            writer.close()

    async def play(writer: asyncio.StreamWriter, codec: str, aus: list[bytes]) -> None:
        pk = Packetizer(codec)
        start = time.monotonic()
        i = GOP - 12  # join mid-GOP, as a sampler does: the first keyframe is ~0.5 s away
        n = 0
        try:
            while not writer.is_closing():  # the sampler's TEARDOWN, or its close
                for p in pk.access_unit(aus[i % len(aus)], 3600 * (i + 1)):
                    writer.write(b"$\x00" + struct.pack("!H", len(p)) + p)
                await writer.drain()
                i += 1
                n += 1
                await asyncio.sleep(max(0.0, start + n / FPS - time.monotonic()))
        except ConnectionError:
            pass

    async def main() -> None:
        srv = await asyncio.start_server(client, "127.0.0.1", 0)
        conn.send(srv.sockets[0].getsockname()[1])
        await asyncio.to_thread(conn.recv)
        srv.close()

    asyncio.run(main())


async def bench(port: int, name: str, n: int, count: int = 2) -> dict[str, float]:
    target = Target("bench", "127.0.0.1", f"rtsp://127.0.0.1:{port}/{name}")
    settings = SampleSettings()
    fetch_cpu, work_cpu, wall = [], [], []
    ref = None
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        f = await fetch_keyframes(target, ProbeSettings(timeout_s=10), count=count)
        c1 = time.process_time()
        assert f.result.ok, f.result.detail
        d, _, _, _, thumb = _process(f.keyframes, settings, ref)
        c2 = time.process_time()
        wall.append(time.perf_counter() - w0)
        assert d.ok, d.faults
        ref = thumbnail(thumb) if ref is None else ref
        fetch_cpu.append(c1 - c0)
        work_cpu.append(c2 - c1)
    # where the picture CPU goes, on the last sample's first keyframe
    split: dict[str, list[float]] = {"decode": [], "checks": [], "jpeg": []}
    for _ in range(n):
        c0 = time.process_time()
        pic = decode(f.keyframes[0], settings.width)
        c1 = time.process_time()
        diagnose(pic.frame, settings.thresholds, previous=pic.frame, reference=ref)
        c2 = time.process_time()
        thumbnail_jpeg(pic, settings.jpeg_qscale)
        c3 = time.process_time()
        for k, v in zip(split, (c1 - c0, c2 - c1, c3 - c2), strict=True):
            split[k].append(v)
    return {**{f"{k}_ms": statistics.median(v) * 1000 for k, v in split.items()},
            "fetch_ms": statistics.median(fetch_cpu) * 1000,
            "work_ms": statistics.median(work_cpu) * 1000,
            "wall_s": statistics.median(wall), "kf_kb": len(f.keyframes[0].data) / 1024}


def reference_ms(idle_s: float = 0.0) -> float:
    """A fixed CPU workload (pure Python, zlib, a numpy sort: none of camwatch's code): the
    machine's speed of the minute, so that figures taken hours or machines apart can be
    compared. Back to back (``idle_s`` 0: min of 5), or each run after ``idle_s`` of sleep
    (median of 3), as a sample's work comes after seconds of waiting for keyframes: in some
    hours this virtual machine runs such a burst far slower than back to back (bench/README,
    "measured again")."""
    import zlib

    import numpy as np
    data = np.random.default_rng(1).integers(0, 64, 4 << 20, dtype=np.uint8).tobytes()
    arr = np.random.default_rng(2).random(1 << 20)
    runs = []
    for _ in range(3 if idle_s else 5):
        if idle_s:
            time.sleep(idle_s)
        c0 = time.process_time()
        total = 0
        for i in range(300_000):
            total += i * i
        zlib.compress(data, 6)
        np.sort(arr)
        runs.append(time.process_time() - c0)
    return (statistics.median(runs) if idle_s else min(runs)) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="the event loop the samples run under (the daemon's: uvloop)")
    ap.add_argument("--malloc", choices=("daemon", "default"), default="daemon",
                    help="the daemon's malloc settings while sampling, or glibc's own")
    ap.add_argument("--one-frame", action="store_true",
                    help="as with quality.second_frame: false (one keyframe, no freeze check)")
    args = ap.parse_args()
    if args.malloc == "daemon":
        assert tune_malloc() and set_picture_threshold(SampleSettings().width), "not glibc"
    streams: dict[str, tuple[str, list[bytes]]] = {}
    for size, (w, h, rate) in SIZES.items():
        for codec in ("H264", "H265"):
            streams[f"{size}-{codec}"] = (codec, encode(w, h, rate, codec))
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(child, streams), daemon=True)
    proc.start()
    port = parent.recv()
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    print(f"machine reference workload: {reference_ms():.1f} ms back to back, "
          f"{reference_ms(2.6):.1f} ms after 2.6 s idle (pure Python + zlib + numpy; lower is "
          f"faster)")
    print(f"{'stream':<12} {'keyframe':>9} {'fetch CPU':>10} {'picture CPU':>12} "
          f"{'total CPU':>10} {'wall':>6} {'10k/h cores':>12}   picture CPU of one keyframe:"
          f" decode+scale / checks / jpeg")
    for name in streams:
        r = run(bench(port, name, args.n, 1 if args.one_frame else 2))
        total = r["fetch_ms"] + r["work_ms"]
        print(f"{name:<12} {r['kf_kb']:>7.0f}KB {r['fetch_ms']:>8.1f}ms {r['work_ms']:>10.1f}ms "
              f"{total:>8.1f}ms {r['wall_s']:>5.2f}s {total * 10_000 / 3600 / 1000:>12.3f}   "
              f"{r['decode_ms']:.1f} / {r['checks_ms']:.1f} / {r['jpeg_ms']:.1f} ms")
    print(f"machine reference workload after: {reference_ms():.1f} ms back to back, "
          f"{reference_ms(2.6):.1f} ms after 2.6 s idle")
    parent.send("stop")
    proc.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
