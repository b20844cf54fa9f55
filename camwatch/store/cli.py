"""``camwatch store ...``: the store's own commands (``migrate``: SQLite to PostgreSQL).
The PostgreSQL driver is imported only when a command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camwatch.errors import StoreError
from camwatch.secrets import Secret, read_secret


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    sub.required = True
    m = sub.add_parser("migrate", help="copy a SQLite store into PostgreSQL, every row checked",
                       description="Copy a SQLite store into PostgreSQL (a new database, or an "
                                   "empty camwatch one) in one transaction, then check every "
                                   "row of every table against the source. Stop the daemon "
                                   "first.")
    m.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="the SQLite store (store.path), e.g. camwatch.db")
    to = m.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", metavar="DSN",
                    help="postgresql://user:password@host:port/db (other users of the machine "
                         "can see a command line: prefer --to-env or --to-file)")
    to.add_argument("--to-env", metavar="NAME", help="environment variable holding the DSN")
    to.add_argument("--to-file", metavar="FILE", type=Path, help="file holding the DSN")
    m.set_defaults(func=cmd_store)


def cmd_store(args: argparse.Namespace) -> int:
    if args.to is not None:
        dsn = Secret(args.to)
    else:
        try:
            dsn = read_secret(args.to_env, args.to_file) or Secret("")
        except LookupError as exc:
            raise StoreError(f"camwatch store migrate: {exc}") from None
        if not dsn:
            raise StoreError("camwatch store migrate: the DSN given is empty")
    from camwatch.store import require_postgres_driver

    require_postgres_driver()
    from camwatch.store.migrate import migrate
    from camwatch.store.postgres import describe_dsn

    counts = migrate(Path(args.source), dsn,
                     progress=lambda msg: sys.stderr.write(msg + "\n"))
    total = sum(counts.values())
    sys.stdout.write(f"{args.source} -> {describe_dsn(dsn)}: {total:,} rows in "
                     f"{len(counts)} tables copied and checked row by row\n")
    for table, n in counts.items():
        sys.stdout.write(f"  {table}: {n:,}\n")
    return 0
