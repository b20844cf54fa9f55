"""``camwatch demo`` tells a repair ticket's life (the issue's "done when"): a camera's
password is changed, its ticket is opened and dispatched to the maintainers' group, "fixed"
too early and rejected at verification, really fixed, and closed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import ROOT
from tests.test_daemon import poll
from tests.test_demo_cli import free_first_host


def test_demo_tells_a_ticket_story(tmp_path: Path) -> None:
    out_path = tmp_path / "stdout.log"
    with open(out_path, "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camwatch", "demo", "--channels", "150", "--dir",
             str(tmp_path / "demo"), "--listen", "127.0.0.1:0", "--interval", "5s",
             "--first-host", free_first_host(), "--outage-at", "3600"],
            cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            def text() -> str:
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text("utf-8")
                return out_path.read_text("utf-8")

            closed = poll("the ticket closed", lambda: re.search(
                r"工单 #(\d+) 核实结案（camwatch ticket show", text()), 240)
            no = int(closed.group(1))
            # two voices, each in its own order: what the maintainers' group received (through
            # the outbox, delivered when the dispatcher gets to it: the closing message may
            # come after the narration says so) and the demo's narration of what it did; how
            # the two interleave depends on delivery, not on the story
            expected = ((lambda x: "维修群收到" in x,
                         ["新工单", "核实未通过，退回处理", f"【维修工单 #{no} 核实结案】"]),
                        (lambda x: x.startswith("演示："),
                         ["响应工单", "报告已处理工单", "退回处理中", f"工单 #{no} 核实结案"]))

            def voices() -> list[list[str]] | None:
                lines = [x for x in text().splitlines() if f"#{no}" in x]
                out = [[x for x in lines if whose(x)] for whose, _ in expected]
                complete = all(any(key in x for x in said) for said, (_, order)
                               in zip(out, expected, strict=True) for key in order)
                return out if complete else None

            for said, (_, order) in zip(poll("both voices told to the end", voices, 60),
                                        expected, strict=True):
                at = [next(i for i, x in enumerate(said) if key in x) for key in order]
                assert at == sorted(at), said
            story = text()
            base = re.search(r"metrics\s+(http://127\.0\.0\.1:\d+)/metrics", story)
            assert base is not None
            assert f"{base.group(1)}/api/tickets/{no}" in story  # the link, at the bound port
            with urllib.request.urlopen(f"{base.group(1)}/api/tickets/{no}", timeout=5) as r:
                doc = json.loads(r.read())  # loopback only
            kinds = [e["kind"] for e in doc["events"]]
            assert kinds == ["opened", "dispatched", "acknowledged", "fixed", "rejected", "fixed",
                             "verified"]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
