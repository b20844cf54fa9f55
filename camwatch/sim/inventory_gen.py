"""A plausible county's inventory (台账) for the simulated fleet, and the config that reads it.

:func:`plan_inventory` decides, from a seed, the county's townships and villages (GB/T 2260
style codes), which channels are planned / installed / connected, and how connected channels
are grouped into devices (single cameras and NVRs) on loopback addresses. The plan is
compact: rows are produced lazily by :func:`iter_rows` when written, so a 100,000-channel
inventory never sits in memory as row objects.

Codes: county 6 digits; township = county + 3 (001-099 街道, 100-199 镇, 200-399 乡); village
= township + 3 (001-199 社区/居委会, 200-399 村委会). Channel ids are GB/T 28181 20-digit
codes: centre 8 (county 6 + grassroots unit 2), industry 2, type 3 (132 IP camera, 131 camera,
118 NVR channel), network 1, serial 6.
"""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

HEADERS: tuple[str, ...] = (
    "设备编码", "点位名称", "点位类型", "项目", "区县", "区县编码", "乡镇", "乡镇编码", "村",
    "村编码", "运营商", "安装状态", "安装日期", "上云状态", "上云日期", "RTSP地址", "ONVIF地址",
    "所属主机", "经度", "纬度", "凭据",
)
CREDENTIAL_REF = "default"
GB_PASSWORD_FILE = "gb-password.txt"
ONVIF_PATH = "/onvif/device_service"
OPERATORS = ("移动", "联通", "电信")
OPERATOR_WEIGHTS = (0.45, 0.25, 0.30)

Addressing = Literal["hosts", "ports"]
InventoryFormat = Literal["csv", "xlsx"]

# Name material. Combinations are synthetic; any match with a real place is coincidence.
_SURNAMES = (
    "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许沈曾彭吕苏卢蒋蔡贾丁"
    "魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙段雷钱汤尹"
    "常武乔贺龚"
)
_PLACE_SUFFIXES = "庄楼寨集营桥屯店洼湾岗口园河湖堂坊庙铺林寺台埠"
_DIRECTIONS = "东西南北前后大小新老"
_TOWN_ROOTS = (
    "清水", "白马", "青龙", "石桥", "柳林", "桃园", "杏花", "双河", "三里", "五里", "七里", "高台",
    "新安", "永安", "太平", "长兴", "龙泉", "凤凰", "梨园", "枣林", "涡北", "玄武", "观堂", "槐店",
    "谷阳", "铁佛", "安溜", "丁村", "虎岗", "汲水", "鸣鹿", "紫气", "老君", "孤堆", "泥河", "白寺",
)
_STREET_ROOTS = ("城关", "东城", "西城", "南关", "北关", "新华", "人民", "解放", "真源", "卫真")
_COMMUNITY_ROOTS = (
    "东关", "西关", "南街", "北街", "建设路", "文化路", "新华", "幸福", "和平", "光明", "振兴",
    "朝阳", "紫荆", "育才", "团结", "民主", "胜利", "向阳", "健康", "曙光",
)
_VILLAGE_SPOTS = (
    "村委会门口", "十字路口", "村口东", "村口西", "小学门口", "卫生室", "文化广场", "桥头",
    "主街", "党群服务中心", "超市门口", "幼儿园门口", "南出口", "北出口", "养殖场路口", "坑塘边",
)
_URBAN_SPOTS = (
    "小区大门", "路口", "菜市场", "广场", "公交站", "学校门口", "医院门口", "商业街",
    "停车场", "地下车库入口", "东门", "西门", "北门", "南门",
)


@dataclass(frozen=True, slots=True)
class Village:
    code: str  # 12 digits
    name: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Township:
    code: str  # 9 digits
    name: str
    lon: float
    lat: float
    villages: tuple[Village, ...]

    @property
    def kind(self) -> str:
        """街道, 镇 or 乡, from the code's last three digits."""
        n = int(self.code[6:])
        return "街道" if n < 100 else "镇" if n < 200 else "乡"


@dataclass(frozen=True, slots=True)
class County:
    code: str  # 6 digits, GB/T 2260
    name: str
    townships: tuple[Township, ...]

    def township(self, code_or_name: str) -> Township | None:
        for t in self.townships:
            if code_or_name in (t.code, t.name):
                return t
        return None


@dataclass(frozen=True, slots=True)
class InventorySpec:
    """What to generate. ``installed``/``planned`` default to the seed ratios of the domain notes
    (10,048 / 9,896 and 10,520 / 10,048), so ``connected=9896`` gives exactly those figures."""

    connected: int = 2000
    installed: int | None = None
    planned: int | None = None
    county_code: str = "411628"
    county_name: str = "鹿邑县"
    centre: tuple[float, float] = (115.48, 33.86)  # lon, lat of the county seat
    townships: int = 20
    nvr_share: float = 0.10  # of devices
    nvr_channels: tuple[int, int] = (4, 32)
    class_shares: tuple[float, float, float] = (0.15, 0.25, 0.60)
    coords_share: float = 0.95
    addressing: Addressing = "hosts"
    first_host: str = "127.1.0.1"
    rtsp_port: int = 8554  # per address ("hosts"); ignored by "ports"
    onvif_port: int = 8080
    port_base: int = 20000  # "ports": device i listens on 127.0.0.1:port_base+2i (RTSP), +1 (ONVIF)
    seed: int = 0
    # GB/T 28181: channels reached only through operator clouds (lower platforms) that
    # register with camwatch (camwatch.sim.gb_cloud); 0: none. Not counted in ``connected``.
    gb_channels: int = 0
    gb_listen: str = "127.0.0.1:5060"  # where the written config has camwatch listen for them

    def counts(self) -> tuple[int, int, int]:
        """(planned, installed, connected), checked to be consistent."""
        connected = self.connected
        installed = self.installed if self.installed is not None else round(
            connected * 10048 / 9896)
        planned = self.planned if self.planned is not None else round(installed * 10520 / 10048)
        if not 0 <= connected <= installed <= planned:
            raise ValueError(f"expected 0 <= connected <= installed <= planned, got "
                             f"connected={connected} installed={installed} planned={planned}")
        if planned > 999_999:
            raise ValueError(f"at most 999,999 planned channels fit the 6-digit serial of a "
                             f"GB/T 28181 code, got {planned}")
        lo, hi = self.nvr_channels
        if not 1 <= lo <= hi:
            raise ValueError(f"nvr_channels must be 1 <= low <= high, got {lo}-{hi}")
        if not 0.0 <= self.nvr_share <= 1.0:
            raise ValueError(f"nvr_share must be within 0..1, got {self.nvr_share}")
        return planned, installed, connected


@dataclass(slots=True)
class DevicePlan:
    """One device that will run: a single camera or an NVR, all its channels in one village."""

    key: str  # what the control API and 所属主机 call it: the host, or host:port for "ports"
    host: str
    rtsp_port: int
    onvif_port: int
    township: int  # index into County.townships
    village: int
    project: str
    klass: int
    operator: str
    nvr: bool
    channel_ids: list[str]
    paths: list[str]


@dataclass(frozen=True, slots=True)
class IdleRow:
    """A planned-not-installed or installed-not-connected channel: in the inventory, not served."""

    channel_id: str
    township: int
    village: int
    project: str
    klass: int
    operator: str
    installed: bool


CloudRole = Literal["listed", "renamed", "unlisted", "stale"]


@dataclass(frozen=True, slots=True)
class CloudRow:
    """A channel of an operator cloud that is in the ledger. ``role`` is how ledger and
    catalog relate, deliberately mismatched for the reconciliation (台账核对): ``listed``
    (已上云, in the catalog under the ledger's name), ``renamed`` (in the catalog under
    another name), ``unlisted`` (已上云 in the ledger, in no catalog), ``stale`` (in the
    catalog, the ledger says 未上云)."""

    channel_id: str
    name: str
    township: int
    village: int
    klass: int
    project: str
    role: CloudRole
    catalog_name: str  # what the cloud's catalog calls it (differs when ``renamed``)


@dataclass(slots=True)
class CloudPlan:
    """A simulated lower platform (type 200): an operator's cloud that cascades its cameras to
    camwatch over GB/T 28181. ``extra``: catalog channels the ledger lacks (id, name)."""

    id: str
    name: str
    operator: str
    rows: list[CloudRow] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    def catalog(self) -> list[tuple[str, str]]:
        """(id, name) of every channel its catalog lists."""
        out = [(r.channel_id, r.catalog_name) for r in self.rows if r.role != "unlisted"]
        return out + self.extra


@dataclass(slots=True)
class InventoryPlan:
    spec: InventorySpec
    county: County
    devices: list[DevicePlan] = field(default_factory=list)
    idle: list[IdleRow] = field(default_factory=list)
    clouds: list[CloudPlan] = field(default_factory=list)

    @property
    def channel_count(self) -> int:
        return sum(len(d.channel_ids) for d in self.devices)


def channel_path(index: int) -> str:
    """Hikvision-style main-stream path of channel ``index`` (1-based): /Streaming/Channels/101."""
    return sys.intern(f"/Streaming/Channels/{index}01")


def device_address(spec: InventorySpec, index: int) -> tuple[str, str, int, int]:
    """(key, host, rtsp_port, onvif_port) of device ``index`` (0-based).

    "hosts": one 127.x.y.z per device, skipping .0 and .255 last octets; 127.0.0.1 is never
    used (the control endpoint lives there). "ports": all on 127.0.0.1, two ports each.
    """
    if spec.addressing == "ports":
        if spec.port_base <= 0:
            raise ValueError("addressing 'ports' needs a fixed port_base > 0")
        rtsp = spec.port_base + 2 * index
        if rtsp + 1 > 65535:
            raise ValueError(f"device {index} needs port {rtsp + 1} > 65535: lower port_base "
                             f"({spec.port_base}) or use addressing 'hosts'")
        return f"127.0.0.1:{rtsp}", "127.0.0.1", rtsp, rtsp + 1
    first = int(ipaddress.IPv4Address(spec.first_host))
    last_octet = first & 0xFF
    if not 1 <= last_octet <= 254:
        raise ValueError(f"first_host must end in .1-.254, got {spec.first_host}")
    n = last_octet - 1 + index
    addr = ((first >> 8) + n // 254) << 8 | (n % 254 + 1)
    host = str(ipaddress.IPv4Address(addr))
    if addr >> 24 != 127 or addr >> 8 == 0x7F0000:
        raise ValueError(f"device {index} would get {host}, outside 127.0.1.0-127.255.255.254: "
                         f"choose a lower first_host than {spec.first_host}")
    return host, host, spec.rtsp_port, spec.onvif_port


def _pick_name(rng: random.Random, taken: set[str], candidates: list[str]) -> str:
    for _ in range(50):
        name = rng.choice(candidates)
        if name not in taken:
            taken.add(name)
            return name
    base = rng.choice(candidates)
    n = 2
    while f"{base[:-1]}{n}{base[-1]}" in taken:
        n += 1
    name = f"{base[:-1]}{n}{base[-1]}"
    taken.add(name)
    return name


def make_county(spec: InventorySpec, rng: random.Random) -> County:
    """Townships (about 10 % 街道, 55 % 镇, the rest 乡) with 社区 and 村 below them."""
    if len(spec.county_code) != 6 or not spec.county_code.isdigit():
        raise ValueError(f"county_code must be 6 digits (GB/T 2260), got {spec.county_code!r}")
    n = max(1, spec.townships)
    streets = max(1, n // 10)
    towns = max(0, min(99, round(n * 0.55)))
    xiang = max(0, n - streets - towns)
    lon0, lat0 = spec.centre
    names: set[str] = set()
    out: list[Township] = []
    plans = ([("街道", 1 + i) for i in range(min(streets, 99))]
             + [("镇", 100 + i) for i in range(towns)]
             + [("乡", 200 + i) for i in range(min(xiang, 200))])
    town_roots = [*_TOWN_ROOTS] + [s + p for s in _SURNAMES[:40] for p in "集店营楼"]
    for kind, num in plans:
        code = f"{spec.county_code}{num:03d}"
        if kind == "街道":
            tname = _pick_name(rng, names, [r + "街道" for r in _STREET_ROOTS])
            tlon, tlat = lon0 + rng.uniform(-0.02, 0.02), lat0 + rng.uniform(-0.02, 0.02)
        else:
            tname = _pick_name(rng, names, [r + kind for r in town_roots])
            tlon, tlat = lon0 + rng.uniform(-0.25, 0.25), lat0 + rng.uniform(-0.2, 0.2)
        vnames: set[str] = set()
        villages: list[Village] = []
        communities = rng.randint(6, 12) if kind == "街道" else 1 if kind == "镇" else 0
        for i in range(communities):
            vname = _pick_name(rng, vnames, [r + "社区" for r in _COMMUNITY_ROOTS])
            villages.append(Village(f"{code}{1 + i:03d}", vname,
                                    round(tlon + rng.uniform(-0.015, 0.015), 6),
                                    round(tlat + rng.uniform(-0.015, 0.015), 6)))
        if kind != "街道":
            for i in range(rng.randint(12, 30)):
                pattern = rng.random()
                s, p = rng.choice(_SURNAMES), rng.choice(_PLACE_SUFFIXES)
                cands = ([f"{s}{p}村"] if pattern < 0.55 else
                         [f"{rng.choice(_DIRECTIONS)}{s}{p}村"] if pattern < 0.85 else
                         [f"{s}{rng.choice(_SURNAMES)}{p}村"])
                vname = _pick_name(rng, vnames, cands)
                villages.append(Village(f"{code}{200 + i:03d}", vname,
                                        round(tlon + rng.uniform(-0.05, 0.05), 6),
                                        round(tlat + rng.uniform(-0.05, 0.05), 6)))
        out.append(Township(code, tname, round(tlon, 6), round(tlat, 6), tuple(villages)))
    return County(spec.county_code, spec.county_name, tuple(out))


def _project_for(rng: random.Random, klass: int, kind: str, nvr: bool) -> str:
    if nvr and kind == "街道":
        return "智慧小区"
    r = rng.random()
    if klass == 1:
        return "雪亮工程"
    if klass == 2:
        return "雪亮工程" if r < 0.6 else "智慧小区"
    return "数字乡村" if r < 0.8 else "智慧小区"


def _gb_id(county: str, township_index: int, klass: int, project: str, type_code: str,
           serial: int) -> str:
    grassroots = f"{township_index // 2 % 99 + 1:02d}"  # a police station per two townships
    industry = {"雪亮工程": "00", "智慧小区": "01", "数字乡村": "03"}.get(project, "00")
    network = "0" if klass == 1 else "8"
    return f"{county}{grassroots}{industry}{type_code}{network}{serial:06d}"


def plan_inventory(spec: InventorySpec) -> InventoryPlan:
    """Decide everything about the inventory from ``spec.seed``; no I/O."""
    planned, installed, connected = spec.counts()
    rng = random.Random(f"camwatch-sim-inventory:{spec.seed}")
    county = make_county(spec, rng)
    plan = InventoryPlan(spec, county)
    weights = [3.0 if t.kind == "街道" else 2.0 if t.kind == "镇" else 1.0
               for t in county.townships]
    # 数字乡村 is built township by township, each by one operator.
    village_operator = [rng.choices(OPERATORS, OPERATOR_WEIGHTS)[0] for _ in county.townships]
    serial = 0
    lo, hi = spec.nvr_channels

    def place(nvr: bool) -> tuple[int, int, int, str, str]:
        ti = rng.choices(range(len(county.townships)), weights)[0]
        t = county.townships[ti]
        vi = rng.randrange(len(t.villages))
        klass = rng.choices((1, 2, 3), spec.class_shares)[0]
        project = _project_for(rng, klass, t.kind, nvr)
        operator = (village_operator[ti] if project == "数字乡村"
                    else rng.choices(OPERATORS, OPERATOR_WEIGHTS)[0])
        return ti, vi, klass, project, operator

    remaining = connected
    while remaining > 0:
        nvr = rng.random() < spec.nvr_share
        n = min(remaining, rng.randint(lo, hi) if nvr else 1)
        ti, vi, klass, project, operator = place(nvr)
        key, host, rport, oport = device_address(spec, len(plan.devices))
        ids: list[str] = []
        for _ in range(n):
            serial += 1
            type_code = "118" if nvr else ("132" if rng.random() < 0.9 else "131")
            ids.append(_gb_id(spec.county_code, ti, klass, project, type_code, serial))
        plan.devices.append(DevicePlan(key, host, rport, oport, ti, vi, project, klass, operator,
                                       nvr, ids, [channel_path(i + 1) for i in range(n)]))
        remaining -= n
    for i in range(planned - connected):
        ti, vi, klass, project, operator = place(False)
        serial += 1
        type_code = "132" if rng.random() < 0.9 else "131"
        plan.idle.append(IdleRow(_gb_id(spec.county_code, ti, klass, project, type_code, serial),
                                 ti, vi, project, klass, operator,
                                 installed=i < installed - connected))
    if spec.gb_channels > 0:
        _plan_clouds(plan, serial)
    return plan


COUNTY_PLATFORM_NAME = "县级视频共享平台"  # cascades the cameras that are probed over RTSP too
CLOUDS = (("移动", "移动数字乡村云平台", 0.6), ("电信", "电信天翼云眼平台", 0.4))


def platform_id(county_code: str, n: int) -> str:
    """A lower platform's 20-digit id: centre 8, industry 00, type 200, network 0, serial."""
    return f"{county_code}00002000{n:06d}"


def _plan_clouds(plan: InventoryPlan, serial: int) -> None:
    """Operator clouds with ``spec.gb_channels`` ledger channels among them, each with a few
    of every mismatch kind (own random stream: the rest of the plan is as without them)."""
    spec, county = plan.spec, plan.county
    rng = random.Random(f"camwatch-sim-clouds:{spec.seed}")
    total = spec.gb_channels
    for k, (operator, name, share) in enumerate(CLOUDS):
        n = round(total * share) if k < len(CLOUDS) - 1 else total - sum(
            len(c.rows) for c in plan.clouds)
        cloud = CloudPlan(platform_id(spec.county_code, k + 2), name, operator)
        odd: tuple[tuple[CloudRole, int], ...] = (
            ("unlisted", max(2, n // 30)), ("renamed", max(1, n // 40)),
            ("stale", max(1, n // 90)))
        roles = [r for r, m in odd for _ in range(m)]
        roles += ["listed"] * max(0, n - len(roles))
        rng.shuffle(roles)
        # a cloud serves the countryside: townships, not 街道
        towns = [i for i, t in enumerate(county.townships) if t.kind != "街道"] or [0]
        for role in roles[:n]:
            ti = rng.choice(towns)
            t = county.townships[ti]
            vi = rng.randrange(len(t.villages))
            klass = rng.choices((2, 3), (0.2, 0.8))[0]
            serial += 1
            cid = _gb_id(spec.county_code, ti, klass, "数字乡村", "132", serial)
            place = f"{t.villages[vi].name}{rng.choice(_VILLAGE_SPOTS)}"
            # the ledger names a point with its township; a platform often does not
            listed_as = place if role == "renamed" else t.name + place
            cloud.rows.append(CloudRow(cid, t.name + place, ti, vi, klass, "数字乡村", role,
                                       listed_as))
        for _ in range(max(1, n // 60)):
            serial += 1
            ti = rng.choice(towns)
            t = county.townships[ti]
            cloud.extra.append((_gb_id(spec.county_code, ti, 3, "数字乡村", "132", serial),
                                f"{t.name}新装点位{serial % 1000:03d}"))
        plan.clouds.append(cloud)


def iter_rows(plan: InventoryPlan) -> Iterator[list[str]]:
    """Every inventory row, in :data:`HEADERS` order: connected channels device by device, then
    installed-not-connected, then planned-not-installed. Deterministic for a plan."""
    spec, county = plan.spec, plan.county
    rng = random.Random(f"camwatch-sim-rows:{spec.seed}")
    epoch = dt.date(2019, 3, 1).toordinal()
    last = dt.date(2024, 12, 31).toordinal()

    def common(ti: int, vi: int, cid: str, klass: int, project: str, operator: str,
               spot_index: int | None) -> list[str]:
        t = county.townships[ti]
        v = t.villages[vi]
        spots = _URBAN_SPOTS if t.kind == "街道" or v.name.endswith("社区") else _VILLAGE_SPOTS
        name = f"{t.name}{v.name}{rng.choice(spots)}"
        if spot_index is not None:
            name += f"{spot_index}号"
        return [cid, name, str(klass), project, county.name, county.code, t.name, t.code,
                v.name, v.code, operator]

    def coords(ti: int, vi: int) -> list[str]:
        if rng.random() >= spec.coords_share:
            return ["", ""]
        v = county.townships[ti].villages[vi]
        return [f"{v.lon + rng.uniform(-0.006, 0.006):.6f}",
                f"{v.lat + rng.uniform(-0.006, 0.006):.6f}"]

    def dates(connected: bool) -> list[str]:
        inst = rng.randint(epoch, last - 90)
        out = ["已安装", dt.date.fromordinal(inst).isoformat()]
        if connected:
            return [*out, "已上云", dt.date.fromordinal(inst + rng.randint(0, 60)).isoformat()]
        return [*out, "未上云", ""]

    for d in plan.devices:
        onvif = f"http://{d.host}:{d.onvif_port}{ONVIF_PATH}"
        host = d.key
        for i, (cid, path) in enumerate(zip(d.channel_ids, d.paths, strict=True)):
            row = common(d.township, d.village, cid, d.klass, d.project, d.operator,
                         i + 1 if d.nvr else None)
            row += dates(True)
            row += [f"rtsp://{d.host}:{d.rtsp_port}{path}", onvif, host]
            row += coords(d.township, d.village)
            row.append(CREDENTIAL_REF)
            yield row
    for r in plan.idle:
        row = common(r.township, r.village, r.channel_id, r.klass, r.project, r.operator, None)
        row += dates(False) if r.installed else ["未安装", "", "未上云", ""]
        row += ["", "", ""]
        row += coords(r.township, r.village) if r.installed else ["", ""]
        row.append(CREDENTIAL_REF if r.installed else "")
        yield row
    for cloud in plan.clouds:  # reached through the cloud only: no address, no host
        for c in cloud.rows:
            t = county.townships[c.township]
            v = t.villages[c.village]
            row = [c.channel_id, c.name, str(c.klass), c.project, county.name, county.code,
                   t.name, t.code, v.name, v.code, cloud.operator]
            row += dates(c.role != "stale")
            row += ["", "", ""]
            row += coords(c.township, c.village)
            row.append("")
            yield row


def write_inventory(plan: InventoryPlan, path: Path, fmt: InventoryFormat = "csv") -> int:
    """Write the inventory as CSV (UTF-8 with BOM, for Excel) or XLSX; returns the row count."""
    n = 0
    if fmt == "csv":
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADERS)
            for row in iter_rows(plan):
                w.writerow(row)
                n += 1
        return n
    if fmt != "xlsx":
        raise ValueError(f"inventory format must be csv or xlsx, got {fmt!r}")
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("台账")
    ws.append(list(HEADERS))
    for row in iter_rows(plan):
        ws.append(row)
        n += 1
    wb.save(path)
    return n


def write_password(path: Path, password: str) -> None:
    """Write the shared device password, readable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (password + "\n").encode())
    finally:
        os.close(fd)


def config_document(site_name: str, inventory_name: str, password_name: str,
                    username: str = "admin", clouds: list[CloudPlan] | None = None,
                    gb_listen: str = "127.0.0.1:5060",
                    gb_password_name: str = GB_PASSWORD_FILE,
                    county_platform: str | None = None) -> dict[str, object]:
    """The camwatch config that reads the generated inventory (keys fixed by the loader); with
    ``clouds``, camwatch is their GB/T 28181 upper platform and their channels, which have no
    address of their own, are judged by the platforms alone."""
    doc: dict[str, object] = {
        "site": {"name": site_name},
        "inventory": {"path": inventory_name},
        "credentials": {"default": {"username": username, "password_file": password_name}},
        "probing": {"level": "describe", "interval": "60s", "timeout": "5s",
                    "concurrency": 500, "per_host_concurrency": 4},
        "store": {"path": "camwatch.db"},
        "http": {"listen": "127.0.0.1:9780"},
    }
    if clouds:
        doc["inventory"] = {"path": inventory_name, "address_required": False}
        doc["gb28181"] = {"enabled": True, "listen": gb_listen, "transport": "both",
                          "password_file": gb_password_name,
                          "recording": {"enabled": True},  # they answer RecordInfo
                          "peers": {
                              **({county_platform: {"name": COUNTY_PLATFORM_NAME}}
                                 if county_platform else {}),
                              **{c.id: {"name": c.name} for c in clouds}}}
    return doc


@dataclass(frozen=True, slots=True)
class WrittenFiles:
    inventory: Path
    config: Path
    password: Path
    rows: int
    gb_password: Path | None = None  # the lower platforms' registration password


def write_all(plan: InventoryPlan, out_dir: Path, password: str, *,
              fmt: InventoryFormat = "csv", username: str = "admin",
              gb_password: str | None = None) -> WrittenFiles:
    """Inventory, ``camwatch.yaml`` and ``sim-password.txt`` in ``out_dir`` (and, with operator
    clouds, ``gb-password.txt``: what they register with)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inv = out_dir / f"inventory.{fmt}"
    rows = write_inventory(plan, inv, fmt)
    pw = out_dir / "sim-password.txt"
    write_password(pw, password)
    gb_pw = None
    if plan.clouds:
        gb_pw = out_dir / GB_PASSWORD_FILE
        write_password(gb_pw, gb_password or password)
    cfg = out_dir / "camwatch.yaml"
    doc = config_document(plan.county.name, inv.name, pw.name, username, plan.clouds,
                          plan.spec.gb_listen, county_platform=platform_id(
                              plan.spec.county_code, 1) if plan.devices else None)
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False,
                                  default_flow_style=None), encoding="utf-8")
    return WrittenFiles(inv, cfg, pw, rows, gb_pw)

