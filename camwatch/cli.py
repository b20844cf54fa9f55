"""``camwatch`` command line. Exit codes: 0 ok, 1 bad input (config / inventory, no daemon
to ask), 2 usage, 130 interrupted (Ctrl-C), 141 stdout closed early (``| head``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from camwatch import __version__
from camwatch.client import DEFAULT_LISTEN, daemon_address, status_error
from camwatch.config import Config, check_listen, load_config
from camwatch.errors import CamwatchError, InputError
from camwatch.inventory import Inventory, load_inventory
from camwatch.log import configure
from camwatch.model import CLASS_NAMES, reason_zh
from camwatch.rules.rates import format_rate
from camwatch.textui import Progress, table

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE


def _load(path: str, strict: bool = True) -> tuple[Config, Inventory]:
    cfg = load_config(path)
    inv_cfg = cfg.inventory if strict else cfg.inventory.model_copy(update={"on_error": "skip"})
    inv = load_inventory(inv_cfg, known_credentials=cfg.credentials)
    return cfg, inv


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, inv = _load(args.config, strict=False)
    s = inv.summary()
    out = sys.stdout
    out.write(f"config      {cfg.source}: ok\n")
    out.write(f"inventory   {s['source']}: {s['rows_read']} rows read, {s['channels']} channels"
              f" accepted, {s['rejected']} rejected, {s['warnings']} data-quality warnings\n")
    out.write(f"planned {s['planned']}  installed {s['installed']}  connected {s['connected']}"
              f"  安装率 {format_rate(s['install_rate'])}  上云率 {format_rate(s['cloud_rate'])}\n")
    for title, key in (("点位类型 class", "by_class"), ("项目 project", "by_project"),
                       ("区县 county", "by_county")):
        out.write("\n" + table([title, "channels"], list(s[key].items())) + "\n")
    if s["ignored_columns"]:
        out.write(f"\nignored columns: {', '.join(s['ignored_columns'])}\n")
    for msg in cfg.unresolved_secrets():
        out.write(f"warning: {msg} (needed when camwatch runs)\n")
    if inv.warnings:
        out.write(f"\n{len(inv.warnings)} data-quality warnings (first 20):\n")
        for p in inv.warnings[:20]:
            out.write(f"  {p}\n")
    if inv.errors:
        n, rows = len(inv.errors), inv.rejected_rows
        sys.stderr.write(f"\n{n} error{'s' * (n != 1)} in {rows} row{'s' * (rows != 1)}:\n")
        for p in inv.errors:
            sys.stderr.write(f"  {p}\n")
        return EXIT_INPUT
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from camwatch.probes.result import Level
    from camwatch.sweep import tune_gc

    cfg, inv = _load(args.config)
    if args.level:
        cfg = cfg.model_copy(update={"probing": cfg.probing.model_copy(
            update={"level": Level(args.level)})})
    # As the engine does: the inventory out of the cyclic collector's sight and young
    # collections every 20,000 net new objects, not 700 (bench/bench_sweep.py: ~500
    # collections that found nothing, ~0.5 s of a 10,000-channel sweep's ~5 CPU s); put
    # back after, for callers of main() in a longer-lived process.
    threshold = gc.get_threshold()
    tune_gc(full=False)
    try:
        return _sweep_and_print(args, cfg, inv)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _sweep_and_print(args: argparse.Namespace, cfg: Config, inv: Inventory) -> int:
    from camwatch.sweep import reasons_count, sweep_json, sweep_once, sweep_summary

    progress = Progress("sweep", enabled=False if args.json else None)
    result = _run_async(sweep_once(cfg, inv, progress))
    if args.json:
        # one compact string from the C encoder, written at once: json.dump with an indent
        # made a million small writes of 5 MB at 10,000 channels (a quarter of the sweep's CPU)
        sys.stdout.write(json.dumps(sweep_json(inv, result), ensure_ascii=False,
                                    separators=(",", ":")) + "\n")
        return EXIT_OK
    summ = sweep_summary(inv, result)  # the table needs no per-channel JSON
    print(f"{cfg.site.name}: swept {len(result.results)} connected channels in "
          f"{summ['duration_s']:.1f}s at level '{cfg.probing.level}': {summ['online']} online, "
          f"在线率 {format_rate(summ['online_rate'])}")
    print(table(SWEEP_HEADERS, sweep_rows(result.rates)))
    reasons = reasons_count(result.results.values())
    if reasons:
        print("\n" + table(REASON_HEADERS, reason_rows(reasons)))
    return EXIT_OK


#: The sweep table's columns: one header for each.
SWEEP_HEADERS = ["范围 scope", "类型 class", "在线", "联网", "在线率", "目标", "是否达标"]
REASON_HEADERS = ["离线原因 reason", "代码 code", "channels"]
VERDICT = {True: "达标", False: "未达标", None: "-"}


def sweep_rows(rates: Sequence[Any]) -> list[list[object]]:
    """The sweep table: site, counties and townships, by class and in total (no project,
    village or operator scopes). ``全部`` rows have no target and so no verdict."""
    rows: list[list[object]] = []
    for r in rates:
        if r.project is not None or len(r.scope) > 2 or "operator" in dict(r.scope):
            continue
        target = "-" if r.target is None else format_rate(r.target)
        klass = "全部" if r.klass is None else CLASS_NAMES.get(r.klass, str(r.klass))
        rows.append([" ".join(v for _, v in r.scope) or "全域", klass, r.online, r.connected,
                     format_rate(r.rate), target, VERDICT[r.meets_target]])
    return rows


def reason_rows(counts: dict[str, int]) -> list[list[object]]:
    """Offline reasons as people read them (拒绝连接), with the code the API and metrics use."""
    return [[reason_zh(code), code, n] for code, n in counts.items()]


def cmd_run(args: argparse.Namespace) -> int:
    from camwatch.daemon import Daemon

    if os.geteuid() == 0 and not args.allow_root:
        sys.stderr.write("error: camwatch run refuses to run as root: it parses what thousands "
                         "of devices send. Run it as its own user (deploy/systemd), or pass "
                         "--allow-root if you must.\n")
        return EXIT_USAGE
    if args.listen:  # the address actually bound gets the config's exposure check
        check_listen(load_config(args.config).http, args.listen, "--listen")
    daemon = Daemon(args.config, listen=args.listen)
    return int(_run_async(daemon.run()))


def cmd_status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url, headers = daemon_address(args)
    path = "/api/cluster" if getattr(args, "cluster", False) else "/api/status"
    req = urllib.request.Request(url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        hint = " (check http.auth in the config given with -c)" if exc.code in (401, 403) \
            else " (this camwatch is not in a cluster: cluster.enabled is false)" \
            if exc.code == 404 and path == "/api/cluster" else ""
        sys.stderr.write(f"error: {url}{path} answered HTTP {exc.code} {exc.reason}"
                         f"{hint}\n")
        return EXIT_INPUT
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(status_error(url, args.config, exc) + "\n")
        return EXIT_INPUT
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    if path == "/api/cluster":
        from camwatch.cluster.status import format_cluster

        sys.stdout.write(format_cluster(doc))
        return EXIT_OK
    sys.stdout.write(format_status(doc))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    """``POST /api/reload``: as SIGHUP, but the answer says whether it worked, and why not."""
    import urllib.error
    import urllib.request

    url, headers = daemon_address(args)
    query = "?allow_drop=1" if args.allow_drop else ""
    req = urllib.request.Request(url + "/api/reload" + query, data=b"", headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            sys.stderr.write(f"error: {url}/api/reload answered HTTP {exc.code} {exc.reason}\n")
            return EXIT_INPUT
        doc = json.loads(exc.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(status_error(url, args.config, exc) + "\n")
        return EXIT_INPUT
    if doc.get("ok"):
        sys.stdout.write(f"reloaded: {doc.get('channels')} channels\n")
        return EXIT_OK
    detail = {k: v for k, v in doc.items() if k not in ("ok", "error")}
    sys.stderr.write(f"refused: {doc.get('error')}\n")
    for key, value in detail.items():
        sys.stderr.write(f"  {key}: {value}\n")
    if "dropped" in detail:
        sys.stderr.write("  (camwatch reload --allow-drop accepts it)\n")
    return EXIT_INPUT


def format_status(doc: dict[str, Any]) -> str:
    """The terminal summary of ``/api/status``: states, rates by class against targets,
    worst townships, top offline reasons, prober problems."""
    states = doc.get("states", {})
    lines = [f"{doc.get('site', 'camwatch')}: {doc.get('channels', 0)} channels  "
             f"online {states.get('online', 0)}  offline {states.get('offline', 0)}  "
             f"unknown {states.get('unknown', 0)}"]
    problems = doc.get("problems") or []
    lines.append("prober: " + ("healthy" if not problems else "UNHEALTHY: " + "; ".join(problems)))
    pictures = doc.get("pictures")
    if pictures is not None:  # quality.enabled: the 完好率 beside the 在线率
        lines.append(f"pictures: ok {pictures.get('ok', 0)}  degraded "
                     f"{pictures.get('degraded', 0)}  not sampled {pictures.get('unknown', 0)}")
    rates = doc.get("rates", [])
    rows: list[list[object]] = []
    for r in rates:
        if r["scope"] or r["project"] is not None or r["class"] is None:
            continue
        row: list[object] = [CLASS_NAMES.get(r["class"], str(r["class"])), r["online"],
                             r["connected"], format_rate(r["rate"]), format_rate(r["target"]),
                             VERDICT[r["meets_target"]]]
        if pictures is not None:
            row += [format_rate(r.get("intact_rate")), VERDICT[r.get("intact_meets_target")]]
        rows.append(row)
    if rows:
        lines += ["", table(STATUS_CLASS_HEADERS + (STATUS_INTACT_HEADERS if pictures is not None
                                                    else []), rows)]
    towns = [r for r in rates if "township" in r["scope"] and r["class"] is None
             and r["project"] is None and r["rate"] is not None]
    towns.sort(key=lambda r: r["rate"])
    if towns:
        lines += ["", table(STATUS_TOWN_HEADERS,
                            [[f"{r['scope'].get('county', '')} {r['scope']['township']}",
                              r["online"], r["connected"], format_rate(r["rate"])]
                             for r in towns[:5]])]
    reasons = doc.get("offline_reasons") or {}
    if reasons:
        lines += ["", table(REASON_HEADERS, reason_rows(dict(list(reasons.items())[:8])))]
    gb = doc.get("gb28181")
    if gb:  # camwatch as a GB/T 28181 upper platform (docs/gb28181.md)
        lines += ["", f"GB/T 28181: {gb['platforms']} platforms ({gb['up']} up), "
                      f"{gb['catalog_channels']} channels in catalogs",
                  f"上云率 declared {format_rate(gb['declared_rate'])}  measured "
                  f"{format_rate(gb['measured_rate'])}  台账核对: {gb['missing']} 已上云 rows "
                  f"in no catalog, {gb['not_in_ledger']} catalog channels not in the ledger"
                  + ("" if gb["complete"] else " (a catalog is partial)")]
    return "\n".join(lines) + "\n"


STATUS_CLASS_HEADERS = ["类型 class", "在线", "联网", "在线率", "目标", "是否达标"]
STATUS_TOWN_HEADERS = ["最差乡镇 worst townships", "在线", "联网", "在线率"]
STATUS_INTACT_HEADERS = ["完好率", "完好率达标"]


def cmd_diagnose(args: argparse.Namespace) -> int:
    from camwatch.quality import cli as quality_cli

    cfg, inv = _load(args.config)
    return quality_cli.cmd_diagnose(args, cfg, inv, _run_async)


def _run_async(coro: Any) -> Any:
    """Run ``coro`` to its end under uvloop; its result is handed back outside the main task.
    On its way in and out, asyncio's runner (3.11) asks ``signal.getsignal`` about its SIGINT
    handler, a partial holding the main task, and the enum lookup formats ``repr(task)``,
    result included, into an error it drops: twice a full repr of a sweep's 10,000
    ProbeResults, 0.19 CPU s (bench/bench_sweep.py)."""
    box: list[Any] = []

    async def main() -> None:
        box.append(await coro)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    return box[0]


DESCRIPTION = """\
Health monitoring for public-security video networks (雪亮工程 / 数字乡村): probes every
channel of a camera inventory (台账) over RTSP and ONVIF, keeps each channel's state, computes
online rates against their targets, sends alerts, serves Prometheus metrics and writes the
monthly bulletin (月度通报)."""

EPILOG = """\
the embedded default:
  `camwatch demo` needs no config and no camera: it starts a simulated county (2,000
  channels, a few dead, hung, wrong-password and flapping cameras, one township losing its
  uplink two minutes in) on loopback addresses, writes a matching inventory and config to
  ./camwatch-demo/, and runs the daemon against it with an SQLite store and no broker.
  That is the "embedded default": everything camwatch does, on this machine alone.

exit codes: 0 ok, 1 bad input (config, inventory, no daemon to ask), 2 usage,
  130 interrupted (Ctrl-C), 141 output closed early (e.g. `| head`).
"""


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line ``summary`` is both its line in ``camwatch --help`` and
    the description of ``camwatch NAME --help``."""
    sentence = summary[:1].upper() + summary[1:] + "."
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=sentence)
    return parser


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="CONFIG",
                   help="camwatch's YAML config (start from config.example.yaml)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` given, only that subcommand's arguments
    filled in: every subcommand is still listed with its summary (``camwatch --help`` reads
    only those), but the modules that add the others' arguments are not imported. Filling
    them all imports aiohttp, the daemon, the simulator, numpy and the reports, ~0.7 CPU s
    before ``camwatch sweep`` or ``check-config`` does anything (bench/bench_sweep.py)."""
    p = argparse.ArgumentParser(prog="camwatch", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"camwatch {__version__}",
                   help="print camwatch's version and exit")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"],
                   help="least severe log messages shown on stderr (default info)")
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even on a terminal (default: JSON when not a terminal)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, summary, fill in COMMANDS:
        parser = _command(sub, name, summary)
        if command is None or command == name:
            fill(parser)
    return p


def _fill_check_config(c: argparse.ArgumentParser) -> None:
    _config_option(c)
    c.set_defaults(func=cmd_check_config)


def _fill_sweep(s: argparse.ArgumentParser) -> None:
    _config_option(s)
    s.add_argument("--json", action="store_true",
                   help="one JSON object on stdout (channels, rates, summary) instead of tables")
    s.add_argument("--level", choices=["tcp", "onvif", "describe", "stream"],
                   help="what counts as online for this sweep (default: probing.level)")
    s.set_defaults(func=cmd_sweep)


def _fill_run(r: argparse.ArgumentParser) -> None:
    _config_option(r)
    r.add_argument("--listen", metavar="HOST:PORT",
                   help="override http.listen, e.g. 127.0.0.1:0 for a free port")
    r.add_argument("--allow-root", action="store_true", help="run even as root (not advised)")
    r.set_defaults(func=cmd_run)


def _fill_status(st: argparse.ArgumentParser) -> None:
    st.add_argument("-c", "--config", metavar="CONFIG",
                    help="the daemon's config (for its address and auth)")
    st.add_argument("--url", help=f"the daemon's base URL (default: from the config's "
                                  f"http.listen, else http://{DEFAULT_LISTEN})")
    st.add_argument("--json", action="store_true", help="print the raw /api/status JSON")
    st.add_argument("--cluster", action="store_true",
                    help="the cluster instead (/api/cluster): instances, shards and their "
                         "owners, heartbeats, takeovers")
    st.set_defaults(func=cmd_status)


def _fill_reload(rl: argparse.ArgumentParser) -> None:
    rl.add_argument("-c", "--config", metavar="CONFIG",
                    help="the daemon's config (for its address and auth)")
    rl.add_argument("--url", help=f"the daemon's base URL (default: from the config's "
                                  f"http.listen, else http://{DEFAULT_LISTEN})")
    rl.add_argument("--allow-drop", action="store_true",
                    help="accept a reload that drops more than inventory.max_drop of the "
                         "channels (refused otherwise)")
    rl.set_defaults(func=cmd_reload)


def _fill_ticket(tk: argparse.ArgumentParser) -> None:
    from camwatch.repairs import api as repairs_api  # aiohttp

    repairs_api.add_arguments(tk, DEFAULT_LISTEN)
    tk.set_defaults(func=repairs_api.cmd_ticket)


def _fill_demo(d: argparse.ArgumentParser) -> None:
    from camwatch import demo  # the daemon and the simulator

    demo.add_arguments(d)
    d.set_defaults(func=lambda a: int(_run_async(demo.run(a))))


def _fill_simulate(sm: argparse.ArgumentParser) -> None:
    from camwatch.sim import cli as sim_cli

    sim_cli.add_arguments(sm)
    sm.set_defaults(func=lambda a: int(_run_async(sim_cli.run(a))))


def _fill_diagnose(dg: argparse.ArgumentParser) -> None:
    from camwatch.quality import cli as quality_cli

    quality_cli.add_arguments(dg)
    dg.set_defaults(func=cmd_diagnose)


def _fill_report(rp: argparse.ArgumentParser) -> None:
    from camwatch.reports import cli as report_cli

    report_cli.add_report_arguments(rp)
    rp.set_defaults(func=report_cli.cmd_report)


def _fill_exempt(ex: argparse.ArgumentParser) -> None:
    from camwatch.reports import cli as report_cli

    report_cli.add_exempt_arguments(ex)
    ex.set_defaults(func=report_cli.cmd_exempt)


def _fill_store(sg: argparse.ArgumentParser) -> None:
    from camwatch.store import cli as store_cli

    store_cli.add_arguments(sg)


#: Every subcommand, in ``camwatch --help``'s order: name, one-line summary, and what adds its
#: arguments (and imports its modules) when it is the one chosen.
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("check-config", "validate the config and inventory, print a summary", _fill_check_config),
    ("sweep", "probe every channel once now and print the rates", _fill_sweep),
    ("run", "run the daemon (probes, states, alerts, /metrics, the API)", _fill_run),
    ("status", "summary of the running daemon, from its API", _fill_status),
    ("reload", "make the running daemon re-read its config and inventory, and say how it went",
     _fill_reload),
    ("ticket", "repair tickets (维修工单) of the running daemon: list, show, ack, done, note",
     _fill_ticket),
    ("demo", "the embedded default: a simulated county on loopback watched by the daemon, "
             "no config needed", _fill_demo),
    ("simulate", "serve a simulated camera fleet on loopback, with a control API",
     _fill_simulate),
    ("diagnose", "sample channels' pictures now and print the quality verdicts (视频质量诊断)",
     _fill_diagnose),
    ("report", "write the monthly bulletin (月度通报) from the store", _fill_report),
    ("exempt", "exempt channels for a period (报备): add, list, remove", _fill_exempt),
    ("store", "the store's own commands: migrate SQLite to PostgreSQL", _fill_store),
]


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, if it names one: the first argument that is neither a
    global option nor ``--log-level``'s value. None for ``camwatch --help``, ``--version``,
    a missing or unknown command: those get the whole parser."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg if any(arg == name for name, _, _ in COMMANDS) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = chosen_command(argv)
    args = build_parser(command).parse_args(argv)
    if command is not None and args.command != command:  # pragma: no cover - a guess gone
        args = build_parser().parse_args(argv)  # wrong: parse again with every command filled
    configure(args.log_level, json=args.log_json)
    try:
        rc = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return rc
    except InputError as exc:
        for p in exc.problems:
            sys.stderr.write(f"error: {p}\n")
        return EXIT_INPUT
    except CamwatchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        return interrupted(args.command)
    except BrokenPipeError:
        return output_closed()


def interrupted(command: str) -> int:
    """Ctrl-C: one line on stderr (after the progress line, if one is drawn), exit 130."""
    sys.stderr.write(f"{chr(10) if sys.stderr.isatty() else ''}camwatch {command}: "
                     f"interrupted\n")
    return EXIT_INTERRUPTED


def output_closed() -> int:
    """The reader of stdout went away (``camwatch sweep | head``): nothing more to say, and
    nothing to flush at exit either, so point stdout at /dev/null; exit like SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
