"""``camwatch`` command line. Exit codes: 0 ok, 1 bad input (config / inventory), 2 usage."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from camwatch import __version__
from camwatch.config import Config, check_listen, load_config
from camwatch.errors import CamwatchError, InputError
from camwatch.inventory import Inventory, load_inventory
from camwatch.log import configure
from camwatch.model import CLASS_NAMES
from camwatch.rules.rates import format_rate
from camwatch.textui import Progress, table

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


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
    from camwatch.sweep import reasons_count, sweep_json, sweep_once, sweep_summary

    cfg, inv = _load(args.config)
    if args.level:
        cfg = cfg.model_copy(update={"probing": cfg.probing.model_copy(
            update={"level": Level(args.level)})})
    progress = Progress("sweep", enabled=False if args.json else None)
    result = _run_async(sweep_once(cfg, inv, progress))
    if args.json:
        json.dump(sweep_json(inv, result), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    summ = sweep_summary(inv, result)  # the table needs no per-channel JSON
    print(f"{cfg.site.name}: swept {len(result.results)} connected channels in "
          f"{summ['duration_s']:.1f}s at level '{cfg.probing.level}': {summ['online']} online, "
          f"在线率 {format_rate(summ['online_rate'])}")
    rows = []
    for r in result.rates:
        if r.project is not None or len(r.scope) > 2 or "operator" in dict(r.scope):
            continue
        target = "-" if r.target is None else format_rate(r.target)
        mark = {True: "达标", False: "未达标", None: ""}[r.meets_target]
        klass = "全部" if r.klass is None else CLASS_NAMES.get(r.klass, str(r.klass))
        rows.append([" ".join(v for _, v in r.scope) or "全域", klass, r.online, r.connected,
                     format_rate(r.rate), target, mark])
    print(table(["范围 scope", "类型 class", "在线", "联网", "在线率", "目标", ""], rows))
    reasons = reasons_count(result.results.values())
    if reasons:
        print("\n" + table(["离线原因 reason", "channels"], list(reasons.items())))
    return EXIT_OK


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

    headers = {}
    url = args.url
    if args.config:
        cfg = load_config(args.config)
        scheme = "https" if cfg.http.tls_cert else "http"
        host = cfg.http.host if cfg.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = url or f"{scheme}://{host}:{cfg.http.port}"
        if cfg.http.auth is not None and (token := cfg.http.auth.token()) is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
    if not url:
        sys.stderr.write("error: give -c CONFIG or --url URL\n")
        return EXIT_USAGE
    req = urllib.request.Request(url.rstrip("/") + "/api/status", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(f"error: cannot read {url}/api/status: {exc}\n")
        return EXIT_INPUT
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    sys.stdout.write(format_status(doc))
    return EXIT_OK


def format_status(doc: dict[str, Any]) -> str:
    """The terminal summary of ``/api/status``: states, rates by class against targets,
    worst townships, top offline reasons, prober problems."""
    states = doc.get("states", {})
    lines = [f"{doc.get('site', 'camwatch')}: {doc.get('channels', 0)} channels  "
             f"online {states.get('online', 0)}  offline {states.get('offline', 0)}  "
             f"unknown {states.get('unknown', 0)}"]
    problems = doc.get("problems") or []
    lines.append("prober: " + ("healthy" if not problems else "UNHEALTHY: " + "; ".join(problems)))
    rates = doc.get("rates", [])
    rows = []
    for r in rates:
        if r["scope"] or r["project"] is not None or r["class"] is None:
            continue
        mark = {True: "达标", False: "未达标", None: ""}[r["meets_target"]]
        rows.append([CLASS_NAMES.get(r["class"], str(r["class"])), r["online"], r["connected"],
                     format_rate(r["rate"]), format_rate(r["target"]), mark])
    if rows:
        lines += ["", table(["类型 class", "在线", "联网", "在线率", "目标", ""], rows)]
    towns = [r for r in rates if "township" in r["scope"] and r["class"] is None
             and r["project"] is None and r["rate"] is not None]
    towns.sort(key=lambda r: r["rate"])
    if towns:
        lines += ["", table(["最差乡镇 worst townships", "在线", "联网", "在线率"],
                            [[f"{r['scope'].get('county', '')} {r['scope']['township']}",
                              r["online"], r["connected"], format_rate(r["rate"])]
                             for r in towns[:5]])]
    reasons = doc.get("offline_reasons") or {}
    if reasons:
        lines += ["", table(["离线原因 reason", "channels"], list(reasons.items())[:8])]
    return "\n".join(lines) + "\n"


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camwatch", description=(
        "Health monitoring for public-security video networks (雪亮工程 / 数字乡村)."))
    p.add_argument("--version", action="version", version=f"camwatch {__version__}")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even on a terminal (default: JSON when not a terminal)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check-config", help="validate the config and inventory, print a summary")
    c.add_argument("-c", "--config", required=True)
    c.set_defaults(func=cmd_check_config)

    s = sub.add_parser("sweep", help="probe every channel once now and print the rates")
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--level", choices=["tcp", "onvif", "describe", "stream"])
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("run", help="run the daemon (probes, states, alerts, /metrics)")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("--listen", help="override http.listen, e.g. 127.0.0.1:0")
    r.add_argument("--allow-root", action="store_true", help="run even as root (not advised)")
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="summary of the running daemon, from its API")
    st.add_argument("-c", "--config", help="the daemon's config (for its address and auth)")
    st.add_argument("--url", help="the daemon's base URL (default: from the config's "
                                  "http.listen)")
    st.add_argument("--json", action="store_true", help="print the raw /api/status JSON")
    st.set_defaults(func=cmd_status)

    from camwatch import demo
    from camwatch.sim import cli as sim_cli

    d = sub.add_parser("demo", help="a simulated county on loopback watched by the daemon "
                                    "(the embedded default)")
    demo.add_arguments(d)
    d.set_defaults(func=lambda a: int(_run_async(demo.run(a))))
    sm = sub.add_parser("simulate", help="serve a simulated camera fleet on loopback")
    sim_cli.add_arguments(sm)
    sm.set_defaults(func=lambda a: int(_run_async(sim_cli.run(a))))

    from camwatch.reports import cli as report_cli

    rp = sub.add_parser("report", help="write the monthly bulletin (月度通报): xlsx, html, "
                                       "csv or json")
    report_cli.add_report_arguments(rp)
    rp.set_defaults(func=report_cli.cmd_report)
    ex = sub.add_parser("exempt", help="exempt channels for a period (报备): add, list, remove")
    report_cli.add_exempt_arguments(ex)
    ex.set_defaults(func=report_cli.cmd_exempt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.log_level, json=args.log_json)
    try:
        return int(args.func(args))
    except InputError as exc:
        for p in exc.problems:
            sys.stderr.write(f"error: {p}\n")
        return EXIT_INPUT
    except CamwatchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
