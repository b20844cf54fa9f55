"""The ``gb28181:`` section: camwatch as a GB/T 28181 upper platform (docs/gb28181.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from camwatch.configbase import Duration, PositiveInt, _Model, _resolve_path
from camwatch.secrets import Secret, read_secret

GB_ID = re.compile(r"^[0-9]{20}$")


def _listen(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port like '127.0.0.1:5060', got {v!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GbPeer(_Model):
    """Settings of one lower platform or device, by its 20-digit id."""

    name: str = ""
    password_env: str | None = None
    password_file: Path | None = None

    _abs = field_validator("password_file")(_resolve_path)

    @model_validator(mode="after")
    def _one_source(self) -> GbPeer:
        if self.password_env and self.password_file:
            raise ValueError("give either password_env or password_file, not both")
        return self

    def password(self) -> Secret | None:
        return read_secret(self.password_env, self.password_file)


class GbRecording(_Model):
    """RecordInfo (录像完整率): each catalog channel's recordings of the previous local day
    (``report.timezone``), asked once a day from the platform that lists it."""

    enabled: bool = False
    per_minute: PositiveInt = Field(
        default=120, description="RecordInfo queries a minute, all platforms together "
                                 "(100,000 channels: about 14 hours a day at 120)")
    timeout: Duration = Field(
        default=60.0, description="an answer short of its SumNum this long after the query "
                                  "is kept as partial (a lower bound)")


class GbConfig(_Model):
    enabled: bool = False
    listen: str = "127.0.0.1:5060"
    allow_public: bool = Field(
        default=False, description="listen beyond loopback: lower platforms on other "
                                   "machines (an explicit choice, as for http.listen)")
    transport: Literal["udp", "tcp", "both"] = "both"
    sip_id: str = Field(default="34020000002000000001",
                        description="camwatch's own 20-digit id (a platform, type 200)")
    domain: str = Field(default="3402000000", description="SIP domain / realm (10 digits)")
    password_env: str | None = None
    password_file: Path | None = None
    peers: dict[str, GbPeer] = Field(default_factory=dict)
    allow_unknown: bool = Field(
        default=False, description="accept ids not under peers (with the section's password)")
    keepalive_timeout: Duration = 180.0
    register_expires_max: Duration = 86400.0
    catalog_interval: Duration = 600.0
    catalog_timeout: Duration = Field(
        default=30.0, description="a catalog not complete this long after its first part "
                                  "is taken as partial")
    subscribe: bool = Field(default=True, description="SUBSCRIBE to catalog events")
    max_tcp_connections: PositiveInt = 1024
    recording: GbRecording = Field(default_factory=GbRecording)
    unknown_per_minute: PositiveInt = Field(
        default=60, description="REGISTERs from unknown ids answered per source address a "
                                "minute; the rest are dropped")

    _abs = field_validator("password_file")(_resolve_path)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        _listen(v)
        return v

    @field_validator("sip_id")
    @classmethod
    def _sip_id(cls, v: str) -> str:
        if not GB_ID.match(v):
            raise ValueError(f"expected a 20-digit GB/T 28181 id, got {v!r}")
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not re.match(r"^[0-9A-Za-z.-]{1,64}$", v):
            raise ValueError(f"expected a SIP domain like '3402000000', got {v!r}")
        return v

    @field_validator("peers")
    @classmethod
    def _peer_ids(cls, v: dict[str, GbPeer]) -> dict[str, GbPeer]:
        for pid in v:
            if not GB_ID.match(pid):
                raise ValueError(f"peer ids are 20-digit GB/T 28181 ids, got {pid!r}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> GbConfig:
        if self.password_env and self.password_file:
            raise ValueError("give either password_env or password_file, not both")
        if not self.enabled:
            return self
        host, port = _listen(self.listen)
        if not _is_loopback(host) and not self.allow_public:
            raise ValueError(f"listening on {self.listen} lets any machine that reaches it "
                             f"register; set gb28181.allow_public: true to mean it, or "
                             f"listen on loopback, e.g. 127.0.0.1:{port}")
        if not self.peers and not self.allow_unknown:
            raise ValueError("no peers and allow_unknown is false: every platform would be "
                             "refused; list the lower platforms under peers")
        has_default = bool(self.password_env or self.password_file)
        missing = [pid for pid, p in self.peers.items()
                   if not (p.password_env or p.password_file)]
        if not has_default and (missing or self.allow_unknown):
            who = ", ".join(missing[:3]) if missing else "unknown ids"
            raise ValueError(f"no password for {who}: set gb28181.password_env or "
                             f"password_file, or the peer's own")
        if self.keepalive_timeout <= 0 or self.catalog_interval <= 0:
            raise ValueError("keepalive_timeout and catalog_interval must be above zero")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return _listen(self.listen)

    def password_for(self, peer_id: str) -> Secret | None:
        """The password a peer must answer with (LookupError names the reference)."""
        p = self.peers.get(peer_id)
        if p is not None and (p.password_env or p.password_file):
            return p.password()
        return read_secret(self.password_env, self.password_file)

    def secret_refs(self) -> list[tuple[str, str | None, Path | None]]:
        out = [("$.gb28181", self.password_env, self.password_file)]
        out += [(f"$.gb28181.peers.{pid}", p.password_env, p.password_file)
                for pid, p in self.peers.items()]
        return [r for r in out if r[1] or r[2]]
