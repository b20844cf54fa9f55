"""The inventory generator: exact counts, well-formed codes, files camwatch's loaders accept."""

from __future__ import annotations

import csv
import re
import stat
from collections import Counter
from pathlib import Path

import pytest
import yaml

from camwatch.config import load_config
from camwatch.gbt28181 import check_id
from camwatch.inventory import load_inventory
from camwatch.sim.inventory_gen import (
    HEADERS,
    InventorySpec,
    device_address,
    iter_rows,
    plan_inventory,
    write_all,
)

SEED_SPEC = InventorySpec(connected=9896, seed=3)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def seed_rows() -> list[dict[str, str]]:
    return [dict(zip(HEADERS, r, strict=True)) for r in iter_rows(plan_inventory(SEED_SPEC))]


def test_seed_counts_are_exact(seed_rows: list[dict[str, str]]) -> None:
    assert len(seed_rows) == 10520
    assert sum(r["安装状态"] == "已安装" for r in seed_rows) == 10048
    assert sum(r["上云状态"] == "已上云" for r in seed_rows) == 9896
    # connected implies installed, and only connected rows have somewhere to probe
    for r in seed_rows:
        if r["上云状态"] == "已上云":
            assert r["安装状态"] == "已安装" and r["上云日期"] >= r["安装日期"]
            assert r["RTSP地址"] and r["ONVIF地址"] and r["所属主机"]
        else:
            assert not r["RTSP地址"] and not r["ONVIF地址"] and not r["所属主机"]
        if r["安装状态"] == "未安装":
            assert not r["安装日期"] and not r["经度"]


@pytest.mark.parametrize(("planned", "installed", "connected"), [(500, 450, 400), (7, 7, 7),
                                                                 (3, 1, 0)])
def test_explicit_counts(planned: int, installed: int, connected: int) -> None:
    spec = InventorySpec(connected=connected, installed=installed, planned=planned, seed=1)
    rows = list(iter_rows(plan_inventory(spec)))
    assert len(rows) == planned
    assert sum(r[11] == "已安装" for r in rows) == installed
    assert sum(r[13] == "已上云" for r in rows) == connected


def test_inconsistent_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="connected <= installed <= planned"):
        InventorySpec(connected=10, installed=5).counts()


def test_codes_are_well_formed(seed_rows: list[dict[str, str]]) -> None:
    ids = [r["设备编码"] for r in seed_rows]
    assert len(set(ids)) == len(ids)
    types: Counter[str] = Counter()
    for r in seed_rows:
        cid = r["设备编码"]
        assert check_id(cid) == (None, None), cid
        assert cid[:6] == "411628"
        types[cid[10:13]] += 1
        assert r["区县编码"] == "411628" and r["区县"] == "鹿邑县"
        t, v = r["乡镇编码"], r["村编码"]
        assert re.fullmatch(r"411628\d{3}", t) and re.fullmatch(re.escape(t) + r"\d{3}", v)
        n = int(t[6:])
        kind = "街道" if 1 <= n <= 99 else "镇" if 100 <= n <= 199 else "乡" if n <= 399 else "?"
        assert r["乡镇"].endswith(kind), (t, r["乡镇"])
        assert r["村"].endswith("社区") == (int(v[9:]) < 200), (v, r["村"])
        assert r["点位类型"] in {"1", "2", "3"}
        assert r["运营商"] in {"移动", "联通", "电信"}
        assert r["项目"] in {"雪亮工程", "数字乡村", "智慧小区"}
    assert set(types) == {"118", "131", "132"}
    # names look Chinese and are not all alike
    assert len({r["乡镇"] for r in seed_rows}) == 20
    assert len({r["村"] for r in seed_rows}) > 200


def test_shares_and_coordinates_are_plausible(seed_rows: list[dict[str, str]]) -> None:
    classes = Counter(r["点位类型"] for r in seed_rows)
    n = len(seed_rows)
    for klass, share in (("1", 0.15), ("2", 0.25), ("3", 0.60)):
        assert abs(classes[klass] / n - share) < 0.04, classes
    installed = [r for r in seed_rows if r["安装状态"] == "已安装"]
    with_coords = [r for r in installed if r["经度"]]
    assert 0.9 < len(with_coords) / len(installed) < 1.0
    for r in with_coords:
        assert 114.9 < float(r["经度"]) < 116.1 and 33.4 < float(r["纬度"]) < 34.3


def test_nvrs_share_a_host_and_single_cameras_do_not(seed_rows: list[dict[str, str]]) -> None:
    per_host = Counter(r["所属主机"] for r in seed_rows if r["所属主机"])
    nvrs = [h for h, n in per_host.items() if n > 1]
    assert 0.05 < len(nvrs) / len(per_host) < 0.15
    assert max(per_host.values()) <= 32
    by_host: dict[str, set[str]] = {}
    for r in seed_rows:
        if r["所属主机"]:
            by_host.setdefault(r["所属主机"], set()).add(r["村编码"])
            assert r["RTSP地址"].startswith(f"rtsp://{r['所属主机']}:8554/")
            assert r["ONVIF地址"] == f"http://{r['所属主机']}:8080/onvif/device_service"
            assert "@" not in r["RTSP地址"]
    assert all(len(v) == 1 for v in by_host.values())  # an NVR sits in one village


def test_addresses_skip_reserved_ones() -> None:
    spec = InventorySpec(first_host="127.1.0.253")
    hosts = [device_address(spec, i)[1] for i in range(600)]
    assert hosts[:4] == ["127.1.0.253", "127.1.0.254", "127.1.1.1", "127.1.1.2"]
    assert len(set(hosts)) == 600
    assert all(not h.endswith((".0", ".255")) for h in hosts)
    ports = InventorySpec(addressing="ports", port_base=30000)
    assert device_address(ports, 3) == ("127.0.0.1:30006", "127.0.0.1", 30006, 30007)
    with pytest.raises(ValueError, match="outside"):
        device_address(InventorySpec(first_host="127.255.255.250"), 10)


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = write_all(plan_inventory(InventorySpec(connected=300, seed=5)), tmp_path / "a", "pw")
    b = write_all(plan_inventory(InventorySpec(connected=300, seed=5)), tmp_path / "b", "pw")
    c = write_all(plan_inventory(InventorySpec(connected=300, seed=6)), tmp_path / "c", "pw")
    assert a.inventory.read_bytes() == b.inventory.read_bytes()
    assert a.inventory.read_bytes() != c.inventory.read_bytes()


def test_written_files_are_what_camwatch_loads(tmp_path: Path) -> None:
    files = write_all(plan_inventory(InventorySpec(connected=400, seed=2)), tmp_path, "s3cret")
    raw = files.inventory.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM, so Excel opens it as UTF-8
    assert raw.splitlines()[0].decode("utf-8-sig") == ",".join(HEADERS)
    assert stat.S_IMODE(files.password.stat().st_mode) == 0o600
    assert files.password.read_text() == "s3cret\n"
    doc = yaml.safe_load(files.config.read_text(encoding="utf-8"))
    assert doc == {
        "site": {"name": "鹿邑县"},
        "inventory": {"path": "inventory.csv"},
        "credentials": {"default": {"username": "admin", "password_file": "sim-password.txt"}},
        "probing": {"level": "describe", "interval": "60s", "timeout": "5s",
                    "concurrency": 500, "per_host_concurrency": 4},
        "store": {"path": "camwatch.db"},
        "http": {"listen": "127.0.0.1:9780"},
    }
    cfg = load_config(files.config)
    inv = load_inventory(cfg.inventory, cfg.credentials)
    assert inv.rejected_rows == 0 and not inv.errors
    summary = inv.summary()
    rows = read_csv(files.inventory)
    assert summary["planned"] == len(rows) == files.rows
    assert summary["connected"] == 400


def test_xlsx_has_the_same_rows(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    plan = plan_inventory(InventorySpec(connected=60, seed=4))
    files = write_all(plan, tmp_path, "pw", fmt="xlsx")
    assert files.inventory.name == "inventory.xlsx"
    ws = load_workbook(files.inventory, read_only=True).active
    assert ws is not None
    values = [[c if c is not None else "" for c in row] for row in ws.iter_rows(values_only=True)]
    assert tuple(values[0]) == HEADERS
    assert values[1:] == list(iter_rows(plan))
    cfg = load_config(files.config)
    assert load_inventory(cfg.inventory, cfg.credentials).summary()["connected"] == 60
