"""The command line as a new user meets it: help for every option and subcommand, tables with a
header for every column, ``| head`` and Ctrl-C, ``status`` with no daemon, and ``exempt add``
refusing a channel id the inventory does not know."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from camwatch.cli import build_parser, format_status, main
from camwatch.sim.model import Fault
from camwatch.store import open_store
from tests.conftest import ROOT
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import poll

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def camwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "camwatch", *args]


def subcommands(parser: argparse.ArgumentParser, path: str = "camwatch"
                ) -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action | None]]:
    """``(path, parser, the choice action that lists it)`` for the parser and every
    subcommand below it, depth first."""
    yield path, parser, None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + " " + name, sub, helps.get(name)
                for item in subcommands(sub, path + " " + name):
                    if item[0] != path + " " + name:
                        yield item


# --- help -------------------------------------------------------------------------------------


def test_every_option_has_help_and_every_subcommand_a_one_line_description() -> None:
    seen = set()
    for path, parser, listed in subcommands(build_parser()):
        seen.add(path)
        if listed is not None:  # its line in the parent's --help, and its own description
            assert listed.help and "\n" not in listed.help, path
            assert parser.description and parser.description.count("\n") == 0, path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{path} {action.option_strings}"
    # every command and the exempt actions were walked
    assert {"camwatch sweep", "camwatch status", "camwatch demo", "camwatch simulate",
            "camwatch report", "camwatch exempt add", "camwatch exempt list"} <= seen


def test_help_explains_the_embedded_default() -> None:
    out = subprocess.run(camwatch("--help"), capture_output=True, text=True, cwd=ROOT,
                         env=ENV, timeout=60)
    assert out.returncode == 0
    text = out.stdout
    assert "embedded default" in text
    # not only named: said what it is
    explained = text[text.index("the embedded default:"):]
    assert "camwatch demo" in explained and "simulated county" in explained
    assert "no config" in explained


def test_each_command_alone_has_the_same_help_as_in_the_whole_parser() -> None:
    """``main`` fills in only the chosen subcommand's arguments (the others' modules cost
    ~0.7 CPU s to import); what each one accepts and prints for ``--help`` is unchanged."""
    from camwatch.cli import COMMANDS, chosen_command

    whole = {path: parser.format_help() for path, parser, _ in subcommands(build_parser())}
    for name, _, _ in COMMANDS:
        alone = {path: parser.format_help()
                 for path, parser, _ in subcommands(build_parser(name))
                 if path == f"camwatch {name}" or path.startswith(f"camwatch {name} ")}
        assert alone == {k: v for k, v in whole.items() if k in alone}, name
        assert len(alone) == sum(1 for k in whole
                                 if k == f"camwatch {name}" or k.startswith(f"camwatch {name} "))
    assert build_parser("sweep").format_help() == build_parser().format_help()
    # global options before the command, and what is not a command
    assert chosen_command(["--log-level", "debug", "sweep", "-c", "x"]) == "sweep"
    assert chosen_command(["--log-json", "--log-level=debug", "run"]) == "run"
    assert chosen_command(["--help"]) is None and chosen_command(["nonsense"]) is None
    assert chosen_command(["--log-level", "sweep"]) is None  # the level's value, not a command


HEAVY = ("numpy", "aiohttp", "camwatch.daemon", "camwatch.engine", "camwatch.demo",
         "camwatch.sim", "camwatch.reports", "camwatch.store", "camwatch.quality.sample",
         "camwatch.repairs.api")
LOADED = f"""\
import sys
from camwatch.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
sys.stderr.write(" ".join(m for m in {HEAVY!r} if m in sys.modules) + "\\n")
"""


def test_sweep_and_check_config_do_not_import_the_daemon_numpy_or_aiohttp(
        tmp_path: Path) -> None:
    """``camwatch sweep`` and ``check-config`` import what they use: the daemon, the simulator,
    the reports, the store, numpy and aiohttp cost ~0.7 CPU s at start-up (bench_sweep.py)."""
    with FleetThread([Fault.NONE, Fault.AUTH_FAIL]) as fleet:
        cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports],
                         "probing: {timeout: 5s}\n")
        for args in (["sweep", "--help"], ["check-config", "--help"],
                     ["check-config", "-c", str(cfg)], ["sweep", "-c", str(cfg), "--json"]):
            proc = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True,
                                  text=True, cwd=ROOT, env=ENV, timeout=60)
            assert proc.stderr.splitlines()[-1:] == [""], (args, proc.stderr)
            assert proc.stdout, args
    assert '"channels"' in proc.stdout  # the sweep's JSON was written


# --- tables -----------------------------------------------------------------------------------


def columns(block: str) -> list[str]:
    """The header cells of a ``textui.table``, cut at the widths of its dash line."""
    lines = block.splitlines()
    i = next(n for n, line in enumerate(lines) if line and set(line) <= {"-", " "})
    header, dashes = lines[i - 1], lines[i]
    cells, pos = [], 0
    for m in re.finditer(r"-+", dashes):
        cells.append(cut(header, pos, m.end()))
        pos = m.end()
    return cells


def cut(text: str, start: int, end: int) -> str:
    """``text[start:end]`` in terminal columns (a Chinese character is two)."""
    from camwatch.textui import width

    out, col = [], 0
    for ch in text:
        if start <= col < end:
            out.append(ch)
        col += width(ch)
    return "".join(out).strip()


def tables(text: str) -> list[str]:
    return [b for b in text.split("\n\n") if re.search(r"^-+(  -+)*$", b, re.M)]


def test_sweep_tables_have_a_header_for_every_column(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with FleetThread([Fault.NONE, Fault.NONE, Fault.AUTH_FAIL]) as fleet:
        cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports],
                         "probing: {timeout: 2s}\nstates: {fail_threshold: 1}\n")
        assert main(["sweep", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    found = tables(out)
    assert len(found) == 2  # rates, offline reasons
    for block in found:
        cells = columns(block)
        assert all(cells), (cells, block)
    assert "是否达标" in found[0] and "认证失败" in found[1]


def test_status_tables_have_a_header_for_every_column() -> None:
    doc = {"site": "鹿邑县", "channels": 10, "states": {"online": 7, "offline": 3},
           "rates": [{"scope": {}, "class": 1, "project": None, "online": 7, "connected": 10,
                      "rate": 0.7, "target": 0.98, "meets_target": False},
                     {"scope": {"county": "鹿邑县", "township": "城关镇"}, "class": None,
                      "project": None, "online": 7, "connected": 10, "rate": 0.7,
                      "target": None, "meets_target": None}],
           "offline_reasons": {"refused": 2, "host_down": 1}}
    text = format_status(doc)
    found = tables(text)
    assert len(found) == 3
    for block in found:
        assert all(columns(block)), block
    assert "拒绝连接" in text and "上级设备离线" in text and "未达标" in text
    assert "完好率" not in text and "pictures" not in text  # sampling off
    # with quality.enabled the daemon adds the pictures and each row's 完好率
    doc["pictures"] = {"ok": 5, "degraded": 1, "unknown": 1}
    doc["rates"][0].update(intact=5, intact_judged=9, intact_rate=5 / 9,
                           intact_meets_target=False)
    text = format_status(doc)
    assert "pictures: ok 5  degraded 1  not sampled 1" in text
    (classes, *_) = tables(text)
    assert all(columns(classes)), classes
    assert "完好率" in classes and "55.56%" in classes


# --- pipes and Ctrl-C -------------------------------------------------------------------------


def test_output_closed_early_exits_quietly(tmp_path: Path) -> None:
    """``camwatch sweep … | head``: the reader is gone before camwatch writes."""
    with FleetThread([Fault.NONE] * 3) as fleet:
        cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports])
        read, write = os.pipe()
        os.close(read)  # like `head` that has already exited
        try:
            proc = subprocess.run(camwatch("sweep", "-c", str(cfg)), stdout=write,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV,
                                  timeout=60)
        finally:
            os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    """SIGINT while a probe waits on a camera that never answers."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        hung.settimeout(0.05)
        port = hung.getsockname()[1]
        cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{port}/ch")],
                         "probing: {timeout: 60s, interval: 5m}\n")
        proc = subprocess.Popen(camwatch("--log-level", "warning", "sweep", "-c", str(cfg)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, env=ENV)
        accepted: list[socket.socket] = []
        try:
            def probing() -> bool:
                assert proc.poll() is None
                try:
                    accepted.append(hung.accept()[0])
                except TimeoutError:
                    return False
                return True

            poll("the sweep to connect to the hung camera", probing, 60)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for s in accepted:
                s.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["camwatch sweep: interrupted"], err
    assert out == ""


# --- status -----------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once this closes


def test_status_without_a_daemon_says_so(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err == (f"no camwatch is running at 127.0.0.1:{port} (start it with "
                   f"`camwatch run -c camwatch.yaml`)\n")
    cfg = write_site(tmp_path, [Row("rtsp://127.0.0.1:1/ch")],
                     f"http: {{listen: '127.0.0.1:{port}'}}\n")
    assert main(["status", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err == (f"no camwatch is running at 127.0.0.1:{port} (start it with "
                   f"`camwatch run -c {cfg}`)\n")
    assert "urlopen" not in err and "Errno" not in err


def test_status_with_no_arguments_asks_the_default_address(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 9780)) == 0:
            pytest.skip("something listens on 127.0.0.1:9780 on this machine")
    assert main(["status"]) == 1
    assert capsys.readouterr().err.startswith("no camwatch is running at 127.0.0.1:9780 ")


# --- exempt -----------------------------------------------------------------------------------


def test_exempt_add_refuses_unknown_channels_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_site(tmp_path, [Row("rtsp://127.0.0.1:1/ch")], "store: {path: cw.db}\n")
    known, typo = "41162800001321000000", "41162800001321000001"
    c = str(cfg)
    base = ["exempt", "-c", c, "add", "--from", "2026-11-03", "--to", "2026-11-10",
            "--reason", "道路施工"]
    assert main([*base, "--channel", known, "--channel", typo]) == 1
    err = capsys.readouterr().err
    assert f"--channel {typo}: not a channel of" in err and f"did you mean {known}?" in err
    assert "--force" in err and known not in err.split("did you mean")[0]
    store = open_store(tmp_path / "cw.db")
    try:
        assert store.exemptions() == []  # nothing added, not even the known one
    finally:
        store.close()

    assert main([*base, "--channel", known]) == 0
    assert "2026-11-03 ~ 2026-11-10" in capsys.readouterr().out
    assert main([*base, "--channel", typo, "--force"]) == 0
    capsys.readouterr()

    # --to is the last day included: list shows it as given, the store ends at 11-11 00:00
    assert main(["exempt", "-c", c, "list"]) == 0
    listing = capsys.readouterr().out
    assert "结束（含）" in listing
    rows = [line.split() for line in listing.splitlines()[2:]]
    assert [r[1:4] for r in rows] == [[known, "2026-11-03", "2026-11-10"],
                                      [typo, "2026-11-03", "2026-11-10"]]
    store = open_store(tmp_path / "cw.db")
    try:
        ends = {x.end - x.start for x in store.exemptions()}
    finally:
        store.close()
    assert ends == {8 * 86400}  # 11-03 00:00 .. 11-11 00:00: eight whole days


def test_exempt_list_shows_an_end_time_that_is_not_midnight(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_site(tmp_path, [Row("rtsp://127.0.0.1:1/ch")], "store: {path: cw.db}\n")
    doc = yaml.safe_load(cfg.read_text("utf-8"))
    assert doc["store"]["path"] == "cw.db"
    cid = "41162800001321000000"
    assert main(["exempt", "-c", str(cfg), "add", "--channel", cid, "--from",
                 "2026-11-03T08:00", "--to", "2026-11-03T18:30", "--reason", "停电"]) == 0
    assert "2026-11-03 08:00 ~ 2026-11-03 18:30" in capsys.readouterr().out


def test_run_async_hands_back_the_result_without_formatting_it() -> None:
    """asyncio's runner formats ``repr(main task)`` on its way in and out (3.11: the enum
    lookup in ``signal.getsignal``), which with a sweep's result took 0.19 CPU s: the result
    must come back without a repr, and errors still come through."""
    from camwatch.cli import _run_async

    class Result:
        reprs = 0

        def __repr__(self) -> str:
            Result.reprs += 1
            return "Result()"

    async def make() -> Result:
        return Result()

    async def fail() -> None:
        raise ValueError("boom")

    got = _run_async(make())
    assert isinstance(got, Result) and Result.reprs == 0
    with pytest.raises(ValueError, match="boom"):
        _run_async(fail())
