"""``camwatch report`` (the monthly bulletin) and ``camwatch exempt`` (报备) entry points.

Exit codes as in :mod:`camwatch.cli`: 0 ok, 1 bad input, 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

from camwatch.config import Config, display_path, load_config
from camwatch.errors import InputError, InventoryError, Problem
from camwatch.inventory import Channel, load_inventory
from camwatch.reports.compute import Bulletin, ReportSettings, compute_bulletin, period_for
from camwatch.reports.pdf import PdfError, require_chromium
from camwatch.reports.period import Period, local_text, zone
from camwatch.reports.rows import channels_from_rows
from camwatch.rules.rates import format_rate
from camwatch.store import Store, open_configured, open_store
from camwatch.textui import Progress, table

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2
FORMATS = ("xlsx", "html", "pdf", "csv", "json")
SCOPES = ("site", "city")


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="CONFIG",
                   help="camwatch's YAML config (its store.path holds the history)")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--month", help="the month to report, like 2026-11 (default: last month)")
    p.add_argument("--from", dest="date_from", metavar="DATE",
                   help="first day of a custom period, like 2026-11-03")
    p.add_argument("--to", dest="date_to", metavar="DATE",
                   help="last day of a custom period (included)")
    p.add_argument("--format", choices=FORMATS,
                   help="default: from the -o suffix, else xlsx; pdf prints the HTML with a "
                        "headless Chromium (Debian package 'chromium')")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="file to write (a directory for csv; '-' for stdout with json/html); "
                        "default: camwatch-report-<period>.<format>")
    p.add_argument("--long-offline-days", type=int, metavar="N",
                   help="list channels offline longer than N days (default: "
                        "report.long_offline_days)")
    p.add_argument("--scope", choices=SCOPES, default="site",
                   help="site: the configured store (default); city: the city of "
                        "report.city, read from its counties' stores (docs/scale-out.md)")


def add_exempt_arguments(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    sub = p.add_subparsers(dest="exempt_command", metavar="ACTION")
    sub.required = True

    def action(name: str, summary: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=summary, description=summary[:1].upper() + summary[1:] + ".")
        return parser

    a = action("add", "exempt channels of the inventory for a period (报备)")
    a.add_argument("--channel", action="append", required=True, metavar="ID",
                   help="channel id (设备编码) of the inventory; repeat for several channels")
    a.add_argument("--from", dest="date_from", required=True, metavar="WHEN",
                   help="first day (2026-11-03) or a local time (2026-11-03T08:00)")
    a.add_argument("--to", dest="date_to", required=True, metavar="WHEN",
                   help="last day, included (2026-11-10 exempts up to the end of that day), "
                        "or a local end time (2026-11-10T18:00)")
    a.add_argument("--reason", required=True, help="why, e.g. 道路施工")
    a.add_argument("--force", action="store_true",
                   help="accept channel ids that are neither in the inventory nor in the "
                        "latest inventory snapshot")
    im = action("import", "exempt the channels and periods listed in a table (报备清单)")
    im.add_argument("file", metavar="FILE",
                    help="CSV (UTF-8 or GBK) or XLSX with the columns 设备编码, 开始, 结束, 原因 "
                         "(or channel, from, to, reason); a day as the end includes it")
    im.add_argument("--sheet", help="the XLSX sheet (default: the first)")
    im.add_argument("--dry-run", action="store_true",
                    help="check the file and say what would be added, without adding it")
    im.add_argument("--force", action="store_true",
                    help="accept channel ids that are neither in the inventory nor in the "
                         "latest inventory snapshot")
    ls = action("list", "list exemptions, with the last day included")
    ls.add_argument("--month", help="only those overlapping this month, like 2026-11")
    ls.add_argument("--channel", metavar="ID", help="only this channel's")
    r = action("remove", "remove a channel's exemptions")
    r.add_argument("channel", metavar="ID", help="channel id")
    r.add_argument("--id", dest="exemption_id", type=int, metavar="N",
                   help="remove only exemption number N (see 'exempt list')")


# --- report -------------------------------------------------------------------------------------


def _settings(cfg: Config, args: argparse.Namespace) -> ReportSettings:
    settings = ReportSettings.from_config(cfg)
    days = getattr(args, "long_offline_days", None)
    if days is not None:
        if days <= 0:
            raise ValueError(f"expected --long-offline-days > 0, got {days}")
        settings = dataclasses.replace(settings, long_offline_days=days)
    return settings


def _open_existing(cfg: Config) -> Store:
    if cfg.store.backend != "sqlite":
        return open_configured(cfg.store)
    path = Path(cfg.store.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no store here (store.path); the daemon creates it")
    return open_store(path)


class _Inventories:
    """That month's snapshot from the store, else the current inventory (loaded once)."""

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self._current: tuple[list[Channel], list[Problem], str] | None = None

    def current(self) -> tuple[list[Channel], list[Problem], str]:
        if self._current is None:
            inv = load_inventory(self.cfg.inventory.model_copy(update={"on_error": "skip"}),
                                 known_credentials=self.cfg.credentials)
            self._current = (inv.channels, inv.errors,
                             f"当前台账 {inv.source}（store 中无该月快照）")
        return self._current

    def for_period(self, period: Period) -> tuple[list[Channel], list[Problem], str]:
        month = period.snapshot_month
        channels = channels_from_rows(self.store.iter_inventory_snapshot(month))
        if channels:
            return channels, [], f"{month} 台账快照（store，{len(channels)} 行）"
        return self.current()


def _default_output(period: Period, fmt: str) -> Path:
    label = period.label if period.is_month else f"{period.first}_{period.last}"
    name = f"camwatch-report-{label}"
    return Path(name if fmt == "csv" else f"{name}.{fmt}")


def _format(args: argparse.Namespace) -> str:
    fmt: str | None = getattr(args, "format", None)
    out = getattr(args, "output", None)
    if fmt:
        return fmt
    if out and out != "-":
        suffix = Path(out).suffix.lower().lstrip(".")
        if suffix in ("xlsx", "html", "pdf", "json", "csv"):
            return suffix
        if suffix == "htm":
            return "html"
        if not suffix:
            return "csv"  # a directory
    return "json" if out == "-" else "xlsx"


def build_bulletin(cfg: Config, args: argparse.Namespace, now: float | None = None,
                   progress: Progress | None = None) -> Bulletin:
    """Compute the bulletin the ``report`` arguments ask for (no output written)."""
    now = time.time() if now is None else now
    settings = _settings(cfg, args)
    period = period_for(getattr(args, "month", None), getattr(args, "date_from", None),
                        getattr(args, "date_to", None), settings, now)
    if getattr(args, "scope", "site") == "city":
        return _city_bulletin(cfg, period, settings, now, progress)
    store = _open_existing(cfg)
    try:
        inventories = _Inventories(cfg, store)
        channels, rejected, source = inventories.for_period(period)
        prev_channels, _, prev_source = inventories.for_period(period.previous())
        return compute_bulletin(
            store, channels, period, settings, site=cfg.site.name, inventory_source=source,
            previous_channels=prev_channels, previous_inventory_source=prev_source,
            rejected=rejected, now=now, progress=progress)
    finally:
        store.close()


def _city_bulletin(cfg: Config, period: Period, settings: ReportSettings, now: float,
                   progress: Progress | None) -> Bulletin:
    """The bulletin of ``report.city``: its county stores read as one; the inventory is each
    county's snapshot of the month (the daemons write them), refused when one is missing."""
    from camwatch.reports.city import CityStores

    city = cfg.report.city
    if city is None:
        raise ValueError(f"--scope city expects report.city in {cfg.source}: the city's name "
                         f"and its counties' stores (docs/scale-out.md)")
    stores = CityStores.open(city, cfg.source)
    try:
        month = period.snapshot_month
        channels, missing = stores.channels(month)
        if missing:
            raise InputError([Problem(
                cfg.source, "$.report.city.stores",
                f"{where}: no inventory snapshot for {month}; expected the one its camwatch "
                f"writes at start and when the month turns (is it running, on this store?)")
                for where in missing])
        source = f"{month} 台账快照（{len(city.stores)} 个存储，{len(channels)} 行）"
        prev_month = period.previous().snapshot_month
        prev, prev_missing = stores.channels(prev_month)
        prev_source = f"{prev_month} 台账快照（{len(city.stores)} 个存储，{len(prev)} 行）"
        if prev_missing or not prev:  # as a county's bulletin: the period's inventory then
            prev, prev_source = channels, source
        return compute_bulletin(
            stores, channels, period, settings, site=city.name, inventory_source=source,
            previous_channels=prev, previous_inventory_source=prev_source, now=now,
            progress=progress)
    finally:
        stores.close()


def write_bulletin(b: Bulletin, fmt: str, output: str | Path) -> str:
    """Write ``b`` as ``fmt`` to ``output`` ('-' is stdout for json and html); returns where."""
    from camwatch.reports import csvjson, html, pdf, xlsx

    if str(output) == "-":
        if fmt == "json":
            import json

            sys.stdout.write(json.dumps(csvjson.bulletin_json(b), ensure_ascii=False,
                                        indent=1) + "\n")
        elif fmt == "html":
            sys.stdout.write(html.render_html(b))
        else:
            raise ValueError(f"expected -o FILE for {fmt} (stdout takes json or html)")
        return "stdout"
    if fmt == "xlsx":
        xlsx.write_xlsx(b, output)
    elif fmt == "pdf":
        pdf.html_to_pdf(html.render_html(b), output)
    elif fmt == "html":
        html.write_html(b, output)
    elif fmt == "json":
        csvjson.write_json(b, output)
    else:
        csvjson.write_csv(b, output)
    return str(output)


def cmd_report(args: argparse.Namespace) -> int:
    month = getattr(args, "month", None)
    if month and (getattr(args, "date_from", None) or getattr(args, "date_to", None)):
        sys.stderr.write("camwatch report: give either --month or --from/--to, not both\n")
        return EXIT_USAGE
    cfg = load_config(args.config)
    fmt = _format(args)
    if fmt == "pdf":  # no Chromium: say so before a minute of computing
        try:
            require_chromium()
        except PdfError as exc:
            sys.stderr.write(f"camwatch report: {exc}\n")
            return EXIT_INPUT
    try:
        # ``args.now`` (not a command-line option) lets a caller or a test fix the clock.
        b = build_bulletin(cfg, args, now=getattr(args, "now", None),
                           progress=Progress("report"))
    except ValueError as exc:
        sys.stderr.write(f"camwatch report: {exc}\n")
        return EXIT_USAGE
    except FileNotFoundError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_INPUT
    output = getattr(args, "output", None) or _default_output(b.period, fmt)
    try:
        where = write_bulletin(b, fmt, output)
    except ValueError as exc:
        sys.stderr.write(f"camwatch report: {exc}\n")
        return EXIT_USAGE
    except PdfError as exc:
        sys.stderr.write(f"camwatch report: {exc}\n")
        return EXIT_INPUT
    s = b.summary
    sys.stderr.write(
        f"{b.period.label}: 安装率 {format_rate(s.install_rate)} ({s.installed}/{s.planned}), "
        f"上云率 {format_rate(s.cloud_rate)} ({s.connected}/{s.installed}), "
        f"在线率 {format_rate(s.tw.rate)} (时间加权), {format_rate(s.snap.rate)} (期末快照); "
        f"{len(b.long_offline)} channels offline > {b.settings.long_offline_days} days; "
        f"wrote {where}\n")
    return EXIT_OK


# --- exemptions ---------------------------------------------------------------------------------


def _import_exemptions(cfg: Config, args: argparse.Namespace, tz: dt.tzinfo) -> int:
    """``exempt import FILE``: every row checked first; nothing written unless all are good;
    rows already recorded (same channel, start, end, reason) skipped, so that a file imported
    twice adds nothing the second time."""
    from camwatch.reports.exempt_import import new_only, read_exemptions

    path = Path(args.file)
    try:
        rows = read_exemptions(path, tz, args.sheet)
    except InputError as exc:
        for p in exc.problems:
            sys.stderr.write(f"error: {p}\n")
        sys.stderr.write("nothing imported\n")
        return EXIT_INPUT
    store = open_configured(cfg.store)
    try:
        if not args.force:
            where = display_path(path)
            unknown = _unknown_channels(cfg, store, [r.channel_id for r in rows],
                                        [f"{where}: row {r.row}: {r.channel_id}" for r in rows])
            if unknown:
                sys.stderr.write(unknown.replace("nothing exempted", "nothing imported"))
                return EXIT_INPUT
        ids = sorted({r.channel_id for r in rows})
        recorded = store.exemptions(min(r.start for r in rows), max(r.end for r in rows), ids)
        fresh, dup = new_only(rows, ((x.channel_id, x.start, x.end, x.reason)
                                     for x in recorded))
        verb = "would add" if args.dry_run else "exemption"
        now = time.time()
        for r in fresh:
            n = "" if args.dry_run else \
                f" {store.add_exemption(r.channel_id, r.start, r.end, r.reason, now)}"
            print(f"{verb}{n}: {r.channel_id} {_span_text(r.start, r.end, tz)} {r.reason}")
    finally:
        store.close()
    done = "would import" if args.dry_run else "imported"
    print(f"{done} {len(fresh)} exemption{'s' * (len(fresh) != 1)} from {display_path(path)}"
          + (f"; {dup} already recorded, skipped" if dup else ""))
    return EXIT_OK


def _when(text: str, tz: dt.tzinfo, end: bool) -> float:
    """A day (``2026-11-03``: its start; as an end, the start of the next day) or a local
    time (``2026-11-03T08:00``), as ``exempt import`` reads its cells."""
    from camwatch.reports.exempt_import import moment

    return moment(text, tz, end)


def _start_text(start: float, tz: dt.tzinfo) -> str:
    """An exemption's start as ``exempt add --from`` takes it: a day when it is midnight."""
    moment = dt.datetime.fromtimestamp(start, tz)
    return moment.date().isoformat() if _midnight(moment) else local_text(start, tz)


def _last_text(end: float, tz: dt.tzinfo) -> str:
    """An exemption's end as ``exempt add --to`` takes it. The store keeps ``[start, end)``:
    an end at midnight is shown as the day before, the last day included."""
    moment = dt.datetime.fromtimestamp(end, tz)
    if _midnight(moment):
        return (moment.date() - dt.timedelta(days=1)).isoformat()
    return local_text(end, tz)


def _midnight(moment: dt.datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def _span_text(start: float, end: float, tz: dt.tzinfo) -> str:
    return f"{_start_text(start, tz)} ~ {_last_text(end, tz)}"


def _unknown_channels(cfg: Config, store: Store, ids: list[str],
                      named: list[str] | None = None) -> str:
    """An error naming the ids that are neither in the current inventory nor in the latest
    inventory snapshot of the store (a channel since removed from the ledger can still be
    exempted for the months it was in), with the closest known id; empty when all are known.
    ``named``: how each id is named in the error (default ``--channel ID``)."""
    import difflib

    known: set[str] = set()
    sources = []
    try:
        inv = load_inventory(cfg.inventory.model_copy(update={"on_error": "skip"}),
                             known_credentials=cfg.credentials)
    except InventoryError as exc:
        unreadable = f"; the inventory could not be read: {exc}"
    else:
        unreadable = ""
        known |= {c.id for c in inv.channels}
        sources.append(inv.source)
    months = store.inventory_months()
    if months:
        known |= {str(r["id"]) for r in store.inventory_snapshot(months[-1])}
        sources.append(f"the {months[-1]} inventory snapshot")
    where = " or ".join(sources) or "any inventory"
    lines = []
    for cid, name in zip(ids, named or [f"--channel {cid}" for cid in ids], strict=True):
        if cid in known:
            continue
        close = difflib.get_close_matches(cid, known, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"error: {name}: not a channel of {where}{hint}{unreadable}\n")
    if lines:
        lines.append("nothing exempted; check the ids, or pass --force to exempt them anyway\n")
    return "".join(lines)


def cmd_exempt(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    tz = zone(cfg.report.timezone)
    action = args.exempt_command
    if action == "add":
        try:
            start = _when(args.date_from, tz, end=False)
            end = _when(args.date_to, tz, end=True)
        except ValueError as exc:
            sys.stderr.write(f"camwatch exempt add: {exc}\n")
            return EXIT_USAGE
        if end <= start:
            sys.stderr.write(f"camwatch exempt add: expected --to after --from, got "
                             f"{args.date_from} to {args.date_to}\n")
            return EXIT_USAGE
        reason = args.reason.strip()
        if not reason:
            sys.stderr.write("camwatch exempt add: expected a --reason, got nothing\n")
            return EXIT_USAGE
        store = open_configured(cfg.store)
        try:
            if not args.force:
                unknown = _unknown_channels(cfg, store, args.channel)
                if unknown:
                    sys.stderr.write(unknown)
                    return EXIT_INPUT
            now = time.time()
            for cid in args.channel:
                n = store.add_exemption(cid, start, end, reason, now)
                print(f"exemption {n}: {cid} {_span_text(start, end, tz)} {reason}")
        finally:
            store.close()
        return EXIT_OK
    if action == "import":
        return _import_exemptions(cfg, args, tz)
    try:
        store = _open_existing(cfg)
    except FileNotFoundError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_INPUT
    try:
        if action == "list":
            lo = hi = None
            if args.month:
                try:
                    period = Period.month(args.month, tz)
                except ValueError as exc:
                    sys.stderr.write(f"camwatch exempt list: {exc}\n")
                    return EXIT_USAGE
                lo, hi = period.start, period.end
            items = store.exemptions(lo, hi, [args.channel] if args.channel else None)
            rows = [[x.id, x.channel_id, _start_text(x.start, tz), _last_text(x.end, tz),
                     x.reason] for x in items]
            print(table(["编号", "设备编码", "开始", "结束（含）", "原因"], rows))
            return EXIT_OK
        n = store.remove_exemptions(args.channel, args.exemption_id)
        print(f"removed {n} exemption{'s' * (n != 1)} of {args.channel}")
        return EXIT_OK if n else EXIT_INPUT
    finally:
        store.close()
