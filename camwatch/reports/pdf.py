"""The bulletin as PDF: the printable HTML (:mod:`camwatch.reports.html`) printed by a
headless Chromium, which officials forward as is.

Chromium is run directly (an argument list, never a shell), in its own process group, with a
throw-away profile in a temporary directory; after ``timeout`` seconds the whole group is
killed (a renderer may outlive the browser process otherwise). Everything it wrote is removed
afterwards, whatever happened; the PDF is moved into place only when it is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from camwatch.errors import CamwatchError

#: Names under which a Chromium (or Chrome) is looked for on ``PATH``, in this order.
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome",
                                   "google-chrome-stable")
DEBIAN_PACKAGE = "chromium"
TIMEOUT_S = 120.0


class PdfError(CamwatchError):
    """The PDF could not be made: no Chromium, or Chromium failed or took too long."""


def find_chromium(names: Sequence[str] = CHROMIUM_NAMES) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The Chromium to print with; :class:`PdfError` naming the package to install if none."""
    exe = find_chromium()
    if exe is None:
        raise PdfError(
            f"PDF output needs a headless Chromium, and none was found on PATH (looked for "
            f"{', '.join(CHROMIUM_NAMES)}): install the Debian/Ubuntu package "
            f"'{DEBIAN_PACKAGE}' (apt install {DEBIAN_PACKAGE}), or write --format html and "
            f"print it from a browser")
    return exe


def chromium_args(chromium: str, page: Path, pdf: Path, profile: Path) -> list[str]:
    """The command line: headless, no network chatter, no first-run work, no header or footer
    of Chromium's own (the page prints its own), a private profile."""
    args = [chromium, "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--no-first-run", "--no-default-browser-check", "--no-pdf-header-footer",
            f"--user-data-dir={profile}", f"--print-to-pdf={pdf}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    args.append(page.as_uri())
    return args


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def html_to_pdf(page: str, output: str | Path, *, chromium: str | None = None,
                timeout: float = TIMEOUT_S) -> None:
    """Print the HTML document ``page`` to the PDF file ``output``."""
    exe = chromium or require_chromium()
    out = Path(output)
    with tempfile.TemporaryDirectory(prefix="camwatch-pdf-") as tmp:
        work = Path(tmp)
        src, pdf, profile = work / "bulletin.html", work / "bulletin.pdf", work / "profile"
        src.write_text(page, encoding="utf-8")
        proc = subprocess.Popen(chromium_args(exe, src, pdf, profile),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise PdfError(f"{exe} did not finish printing the bulletin within "
                           f"{timeout:g} s; killed it") from None
        finally:
            if proc.returncode is None:
                _kill_group(proc)
        # Helpers Chromium started in the group and left behind go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        ok = pdf.exists() and pdf.read_bytes()[:5] == b"%PDF-"
        if proc.returncode != 0 or not ok:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise PdfError(f"{exe} exited with {proc.returncode} and "
                           f"{'no' if not ok else 'a'} PDF: {' | '.join(tail) or 'no output'}")
        shutil.move(str(pdf), str(out))
