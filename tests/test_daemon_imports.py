"""What the daemon loads: numpy and PyAV (~35 MB of the daemon's RSS) only once it samples
pictures (``quality.enabled``), which is off by default."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "av")


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_the_daemon_and_its_api_do_not_load_numpy_or_pyav() -> None:
    assert _loaded("import camwatch.daemon, camwatch.http, camwatch.cli") == set()


def test_camwatch_run_does_not_load_them_either() -> None:
    """What ``camwatch run`` imports before the daemon starts: its own parser, the daemon."""
    assert _loaded("import camwatch.cli as c, camwatch.daemon\n"
                   "c.build_parser('run').parse_args(['run', '-c', 'x.yaml'])") == set()


@pytest.mark.parametrize("module", ["camwatch.quality.decode", "camwatch.quality.sample"])
def test_the_sampling_modules_do(module: str) -> None:
    """The check above could pass because the names changed: the modules that sample do load
    them."""
    assert _loaded(f"import {module}") == set(HEAVY)
