"""Safe defaults: auth on non-loopback binds, constant-time checked credentials, the daemon
refusing root, private store files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.errors import ConfigError
from camwatch.http import serve
from camwatch.inventory import Inventory
from camwatch.store import open_store
from tests.conftest import ROOT


@pytest.mark.parametrize("listen", ["0.0.0.0:9780", "[::]:9780", "192.0.2.10:9780",
                                    "camwatch.example:80"])
def test_non_loopback_bind_needs_auth_or_explicit_opt_out(listen: str) -> None:
    with pytest.raises(ConfigError, match="exposes the API beyond this machine"):
        parse_config({"inventory": {"path": "x"}, "http": {"listen": listen}})
    parse_config({"inventory": {"path": "x"},
                  "http": {"listen": listen, "allow_unauthenticated": True}})
    parse_config({"inventory": {"path": "x"},
                  "http": {"listen": listen, "auth": {"token_env": "T"}}})


@pytest.mark.parametrize("listen", ["127.0.0.1:9780", "127.8.9.10:1", "localhost:1",
                                    "[::1]:9780"])
def test_loopback_bind_is_fine_without_auth(listen: str) -> None:
    parse_config({"inventory": {"path": "x"}, "http": {"listen": listen}})


async def test_api_requires_credentials_metrics_open_by_default(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-Canary-1\n", encoding="utf-8")
    (tmp_path / "pw").write_text("basic-Canary-2", encoding="utf-8")
    for metrics_auth in (False, True):
        cfg = parse_config({
            "inventory": {"path": "x"}, "store": {"path": f"s{metrics_auth}.db"},
            "http": {"listen": "127.0.0.1:0", "metrics_auth": metrics_auth,
                     "auth": {"token_file": "token", "username": "ops",
                              "password_file": "pw"}}}, base_dir=tmp_path)
        engine = Engine(cfg, Inventory("t", [], 0), open_store(cfg.store.path))
        runner = await serve(engine, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        basic = base64.b64encode(b"ops:basic-Canary-2").decode()
        try:
            async with aiohttp.ClientSession() as s:
                async def status(path: str, auth: str | None = None, base: str = base) -> int:
                    headers = {"Authorization": auth} if auth else {}
                    async with s.get(base + path, headers=headers) as r:
                        return r.status

                assert await status("/api/status") == 401
                assert await status("/api/status", "Bearer wrong") == 401
                assert await status("/api/status", "Bearer tok-Canary-1") == 200
                assert await status("/api/channels", f"Basic {basic}") == 200
                assert await status("/healthz") == 200
                assert await status("/metrics") == (401 if metrics_auth else 200)
                assert await status("/metrics", "Bearer tok-Canary-1") == 200
        finally:
            await runner.cleanup()
            engine.store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to run as root to check the refusal")
def test_run_refuses_root_unless_told(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "camwatch", "run", "-c", str(tmp_path / "c")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refuses to run as root" in out.stderr


@pytest.fixture
def self_signed(tmp_path: Path) -> Path:
    from tests.conftest import need_binary

    subprocess.run([need_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True,
                   timeout=60)
    return tmp_path


async def test_https_with_configured_cert_and_key(self_signed: Path) -> None:
    import ssl

    tmp_path = self_signed
    cfg = parse_config({"inventory": {"path": "x"}, "store": {"path": "s.db"},
                        "http": {"listen": "127.0.0.1:0", "tls_cert": "cert.pem",
                                 "tls_key": "key.pem"}}, base_dir=tmp_path)
    engine = Engine(cfg, Inventory("t", [], 0), open_store(cfg.store.path))
    runner = await serve(engine, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    trust = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    trust.check_hostname = False
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{port}/healthz", ssl=trust) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    await r.read()
    finally:
        await runner.cleanup()
        engine.store.close()
