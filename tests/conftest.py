"""Shared fixtures. Helpers that need a real peer skip on a developer machine without it and
fail in CI (env CI set), so CI never passes by skipping."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def need(condition: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a test's real peer is missing."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} not available")


def need_binary(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the {name} binary")
    assert path is not None
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """A PostgreSQL cluster of the tests' own (tests/peers/postgres.py), one per session (per
    xdist worker); skipped without the binaries, required in CI."""
    from tests.peers.postgres import PgServer, binaries

    bindir = binaries()
    need(bindir is not None, "PostgreSQL's initdb and pg_ctl (Debian package postgresql)")
    assert bindir is not None
    server = PgServer(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(pg_server: object) -> Iterator[str]:
    """The DSN of a new, empty database on :func:`pg_server`, dropped after the test."""
    from tests.peers.postgres import PgServer

    assert isinstance(pg_server, PgServer)
    with pg_server.database() as dsn:
        yield dsn
