"""The README's two commands work as pasted on a stock Debian 12 / Ubuntu 24.04, whose Python
refuses ``pip install`` outside a virtual environment (PEP 668): ``./run-demo`` from a clean
clone with Debian's own ``/usr/bin/python3``, a clear message naming ``python3-venv`` when
the venv module's pip bootstrap is missing, and CI running the README's test command
verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, need
from tests.test_demo_cli import free_first_host

DEBIAN_PYTHON = "/usr/bin/python3"
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """The commands of the README's "Try it" section, in order."""
    section = README.read_text("utf-8").split("## Try it", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_gives_the_scripts_and_ci_runs_the_test_command_verbatim() -> None:
    demo, tests = readme_commands()
    assert demo == "./run-demo" and tests == "./run-tests"
    for command in (demo, tests):
        script = ROOT / command.removeprefix("./")
        assert os.access(script, os.X_OK), f"{script} is not executable"
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert re.search(rf"^{re.escape(tests)}$", ci, re.M), ".ci/run must run the README's command"
    assert re.search(r"^\s*python3-venv\b", ci, re.M), ".ci/run must install python3-venv"


def debian_env(**extra: str) -> dict[str, str]:
    """A login-like environment whose python3 is Debian's: no pyenv, no virtual environment
    (pip's own settings of this machine kept: where it finds packages)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("PIP_") or k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "CI")}
    env["PATH"] = "/usr/bin:/bin"
    env.update(extra)
    return env


def need_debian_python() -> None:
    need(Path(DEBIAN_PYTHON).exists(), DEBIAN_PYTHON)
    ok = subprocess.run([DEBIAN_PYTHON, "-c", "import ensurepip, venv"],
                        capture_output=True, timeout=60).returncode == 0
    need(ok, f"{DEBIAN_PYTHON} with its venv module (Debian package python3-venv)")


def clean_clone(dest: Path) -> Path:
    """A clone of this checkout's HEAD (what CI tests; uncommitted edits are not in it)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    subprocess.run([git, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)],
                   check=True, timeout=120)
    return dest


@pytest.mark.slow
@pytest.mark.peer
def test_run_demo_from_a_clean_clone_with_debian_python(tmp_path: Path) -> None:
    need_debian_python()
    clone = clean_clone(tmp_path / "camwatch")
    first = free_first_host()
    out = subprocess.run(
        ["./run-demo", "--channels", "40", "--first-host", first, "--port", "0",
         "--interval", "5s", "--duration", "12"],
        cwd=clone, env=debian_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "creating a virtual environment" in out.stderr
    assert "externally-managed-environment" not in out.stderr
    cfg = (clone / ".venv" / "pyvenv.cfg").read_text("utf-8")
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg  # made from Debian's python3
    assert "camwatch demo: 40 simulated channels of 鹿邑县" in out.stdout
    assert f"(devices from {first})" in out.stdout
    online = [int(n) for n in re.findall(r"^t\+\d\d:\d\d  online (\d+)", out.stdout, re.M)]
    assert online and max(online) > 30, out.stdout
    assert "camwatch demo: stopped" in out.stderr
    assert (clone / "camwatch-demo" / "inventory.csv").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, timeout=60, check=True)
    assert status.stdout == "", f"the demo left files git does not ignore:\n{status.stdout}"


@pytest.mark.parametrize("script", ["run-demo", "run-tests"])
def test_a_missing_python3_venv_is_named(tmp_path: Path, script: str) -> None:
    """Debian's python3 without the python3-venv package has no ensurepip: ``python3 -m venv``
    cannot install pip. The fault is injected by shadowing ensurepip with a module that
    fails to import, as the missing package does."""
    need_debian_python()
    copy = tmp_path / "camwatch"
    (copy / "scripts").mkdir(parents=True)
    for name in (script, "scripts/ensure-venv.sh"):
        shutil.copy2(ROOT / name, copy / name)
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n", encoding="utf-8")
    out = subprocess.run([f"./{script}"], cwd=copy, capture_output=True, text=True,
                         env=debian_env(PYTHONPATH=str(shadow.parent)), timeout=120)
    assert out.returncode == 1
    assert "cannot create a virtual environment" in out.stderr
    assert "sudo apt install python3-venv" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (copy / ".venv").exists()
