"""The configuration file: YAML validated once, at load, into frozen typed objects.

pydantic v2 was chosen over dataclasses because it reports *every* error of a document in one
pass with its location, forbids unknown keys per model, and freezes the result; we only have to
turn its locations into ``$.probing.timeout`` paths and its messages into "expected ..., got ...".

Secrets appear here by reference only (``password_env`` / ``password_file``); they are resolved
when used, so ``check-config`` works on a machine that does not hold them (it warns).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from camwatch import yamlsafe
from camwatch.cluster.config import ClusterConfig
from camwatch.configbase import (
    Duration,
    Fraction,
    PositiveInt,
    _Model,
    _resolve_path,
)
from camwatch.errors import ConfigError, Problem
from camwatch.probes.result import Level
from camwatch.secrets import Secret, read_secret

# --- sections ---------------------------------------------------------------------------------


class SiteConfig(_Model):
    name: str = "camwatch"


class InventoryConfig(_Model):
    path: Path
    format: Literal["auto", "csv", "xlsx", "yaml"] = "auto"
    sheet: str | None = None
    encoding: str = Field(default="auto", description="CSV encoding: auto (UTF-8, else GB18030)")
    columns: dict[str, str] = Field(default_factory=dict, description="field -> header")
    id_format: Literal["gbt28181", "any"] = "gbt28181"
    on_error: Literal["reject", "skip"] = "reject"
    address_required: bool = Field(
        default=True, description="a connected (已上云) row needs an RTSP or ONVIF address; "
        "false when some channels are reached only through a GB/T 28181 platform (gb28181): "
        "those are judged by the platform alone")
    default_credentials: str = "default"
    max_rows: PositiveInt = 1_000_000
    max_drop: Fraction = Field(
        default=0.1, description="a reload that drops more of the channels is refused until "
                                 "confirmed (a second SIGHUP)")
    stable_for: Duration = Field(
        default=3.0, description="the file watcher reloads once size and mtime have not "
                                 "changed for this long (a half-saved file is not read)")

    _abs = field_validator("path")(_resolve_path)


class Credential(_Model):
    username: str
    password_env: str | None = None
    password_file: Path | None = None

    _abs = field_validator("password_file")(_resolve_path)

    @model_validator(mode="after")
    def _one_source(self) -> Credential:
        if self.password_env and self.password_file:
            raise ValueError("give either password_env or password_file, not both")
        return self

    def password(self) -> Secret | None:
        """Resolve the reference now; ``LookupError`` names the reference, never a value."""
        return read_secret(self.password_env, self.password_file)


class IntervalOverride(_Model):
    project: str | None = None
    class_: int | None = Field(default=None, alias="class")
    interval: Duration


class ProbingConfig(_Model):
    level: Level = Level.DESCRIBE
    interval: Duration = 60.0
    timeout: Duration = 5.0
    concurrency: Annotated[int, Field(gt=0, le=100_000)] = 500
    per_host_concurrency: Annotated[int, Field(gt=0, le=1000)] = 4
    onvif_interval: Duration = 3600.0
    onvif: bool = Field(default=True, description="run the ONVIF clock/device-info probe too")
    user_agent: str = "camwatch"
    overrides: tuple[IntervalOverride, ...] = ()
    uplink_check: tuple[str, ...] = Field(
        default=(), description="host:port addresses camwatch must always reach (the video "
                                "platform, the uplink gateway)")

    @field_validator("uplink_check")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ValueError(f"expected host:port like '10.1.0.1:443', got {item!r}")
        return v

    @model_validator(mode="after")
    def _timeout_fits(self) -> ProbingConfig:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be shorter than interval ({self.interval:g}s)"
            )
        return self


class StatesConfig(_Model):
    fail_threshold: PositiveInt = 3
    recover_threshold: PositiveInt = 1
    flap_window: Duration = 1800.0
    flap_max_changes: PositiveInt = 6


class TargetOverride(_Model):
    county: str | None = None
    township: str | None = None
    class_: int | None = Field(default=None, alias="class")
    project: str | None = None
    target: Fraction


class ClassTargets(_Model):
    """Targets by point class and project, with overrides by area: the online rate's
    (``targets``) and the intact rate's (``targets.intact``)."""

    by_class: dict[int, Fraction] = Field(
        default_factory=lambda: {1: 0.98, 2: 0.95, 3: 0.95}, alias="class"
    )
    by_project: dict[str, Fraction] = Field(
        default_factory=lambda: {"智慧小区": 0.98}, alias="project"
    )
    overrides: tuple[TargetOverride, ...] = ()

    @field_validator("by_class")
    @classmethod
    def _known_classes(cls, v: dict[int, float]) -> dict[int, float]:
        bad = sorted(k for k in v if k not in (1, 2, 3, 4, 9))
        if bad:
            raise ValueError(f"expected point classes among 1, 2, 3, 4, 9, got {bad}")
        return v


class TargetsConfig(ClassTargets):
    min_channels: Annotated[int, Field(ge=0)] = 10
    # 完好率 targets (发改高技〔2015〕996号: key public areas 98 %, key industries 95 %);
    # absent: the same as the online rate's
    intact: ClassTargets | None = None

    def intact_targets(self) -> TargetsConfig:
        """The targets the intact rate (完好率) is held to: ``targets.intact`` when given
        (its class, project and overrides; ``min_channels`` is shared), else the online
        rate's."""
        if self.intact is None:
            return self
        return self.model_copy(update={"by_class": self.intact.by_class,
                                       "by_project": self.intact.by_project,
                                       "overrides": self.intact.overrides, "intact": None})


class StoreConfig(_Model):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path = Path("camwatch.db")
    # postgresql: the DSN (postgresql://user:password@host/db) holds a password, so it is
    # given by reference only, like every secret (docs/scale-out.md)
    dsn_env: str | None = None
    dsn_file: Path | None = None

    _abs = field_validator("path", "dsn_file")(_resolve_path)

    @model_validator(mode="after")
    def _dsn_for_postgresql(self) -> StoreConfig:
        given = [k for k in ("dsn_env", "dsn_file") if getattr(self, k)]
        if self.backend == "postgresql" and len(given) != 1:
            raise ValueError("backend postgresql expects exactly one of dsn_env or dsn_file, "
                             f"got {' and '.join(given) or 'neither'}")
        if self.backend == "sqlite" and given:
            raise ValueError(f"{given[0]} is for backend postgresql; backend sqlite uses path")
        return self

    def dsn(self) -> Secret:
        """The PostgreSQL DSN, read now (``LookupError`` naming the reference if it cannot)."""
        value = read_secret(self.dsn_env, self.dsn_file)
        if not value:
            raise LookupError(f"store.{'dsn_env' if self.dsn_env else 'dsn_file'}: empty DSN")
        return value


class HttpAuth(_Model):
    """Credentials a client must present: a bearer token, or HTTP Basic, or both."""

    token_env: str | None = None
    token_file: Path | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    _abs = field_validator("token_file", "password_file")(_resolve_path)

    @model_validator(mode="after")
    def _something(self) -> HttpAuth:
        has_token = bool(self.token_env or self.token_file)
        has_basic = bool(self.username and (self.password_env or self.password_file))
        if not has_token and not has_basic:
            raise ValueError("expected token_env/token_file, or username with "
                             "password_env/password_file")
        if self.token_env and self.token_file:
            raise ValueError("give either token_env or token_file, not both")
        return self

    def token(self) -> Secret | None:
        return read_secret(self.token_env, self.token_file)

    def password(self) -> Secret | None:
        return read_secret(self.password_env, self.password_file)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9780`` / ``[::1]:9780`` -> host (brackets removed) and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port like '127.0.0.1:9780', got {listen!r}")
    return host.strip("[]"), int(port)


def exposure_problem(http: HttpConfig, listen: str) -> str | None:
    """Why serving the API on ``listen`` with ``http``'s settings would hand it to anybody
    who can reach the address, or None. The one check of the listen address: run for the
    configured ``http.listen`` at load, and again for the address actually bound (``--listen``
    of ``camwatch run`` and ``camwatch demo``, see :func:`camwatch.http.serve`)."""
    host, port = split_listen(listen)
    if is_loopback(host) or http.auth is not None or http.allow_unauthenticated:
        return None
    return (f"listening on {listen} exposes the API beyond this machine: anyone who can "
            f"reach it could read /api without authentication. Either set http.auth "
            f"(token_env/token_file, or username with password_env/password_file), or, when "
            f"a firewall or an authenticating reverse proxy guards the port, set "
            f"http.allow_unauthenticated: true; or listen on loopback, e.g. 127.0.0.1:{port}")


def check_listen(http: HttpConfig, listen: str, where: str) -> None:
    """:func:`exposure_problem` (and the address's syntax) as a :class:`ConfigError` located at
    ``where`` (``--listen``, or the config file)."""
    try:
        problem = exposure_problem(http, listen)
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        raise ConfigError([Problem(where, "", problem)])


class HttpConfig(_Model):
    listen: str = "127.0.0.1:9780"
    auth: HttpAuth | None = None
    allow_unauthenticated: bool = False
    metrics_auth: bool = Field(default=False, description="require auth on /metrics too")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Limits on what one client, authenticated or not, can hold (docs/security.md).
    header_timeout: Duration = Field(
        default=10.0, description="a request head must arrive within this, from the "
        "connection's opening or the end of the previous response (also the keep-alive limit)")
    send_timeout: Duration = Field(
        default=60.0, description="a response must be sent within this; a client that "
        "stops reading is disconnected")
    max_connections: PositiveInt = 256
    max_connections_per_client: PositiveInt = 32

    _abs = field_validator("tls_cert", "tls_key")(_resolve_path)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("header_timeout", "send_timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"expected a duration above zero, got {v:g}s")
        return v

    @model_validator(mode="after")
    def _safe_exposure(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.max_connections_per_client > self.max_connections:
            raise ValueError(f"max_connections_per_client ({self.max_connections_per_client}) "
                             f"is above max_connections ({self.max_connections})")
        if (problem := exposure_problem(self, self.listen)) is not None:
            raise ValueError(problem)
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


class CityConfig(_Model):
    """``camwatch report --scope city``: a bulletin above the county, read from the stores of
    the city's counties (docs/scale-out.md, Bulletins above a county)."""

    name: str = Field(min_length=1, description="the city, as the bulletin's title names it")
    stores: list[StoreConfig] = Field(
        min_length=1, description="every county's store (PostgreSQL: dsn_env or dsn_file), "
                                  "or the one store a cluster of instances shares")


class ReportConfig(_Model):
    online_rate: Literal["time_weighted", "snapshot"] = "time_weighted"
    long_offline_days: PositiveInt = 3
    timezone: str = Field(default="Asia/Shanghai",
                          description="where months and days begin (IANA name)")
    max_villages: int = Field(
        default=30, ge=0,
        description="villages listed in the printed bulletin's annex (HTML, PDF), worst "
                    "first; 0 lists every village; XLSX, CSV and JSON keep all")
    city: CityConfig | None = None  # report --scope city

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from camwatch.reports.period import zone

        try:
            zone(v)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
        return v


from camwatch.gb28181.config import GbConfig  # noqa: E402
from camwatch.quality.config import QualityConfig  # noqa: E402  (it subclasses _Model)
from camwatch.repairs.config import RepairsConfig  # noqa: E402  (it subclasses _Model)
from camwatch.rules.alert_config import AlertsConfig  # noqa: E402  (it subclasses _Model)


class Config(_Model):
    site: SiteConfig = SiteConfig()
    inventory: InventoryConfig
    credentials: dict[str, Credential] = Field(default_factory=dict)
    probing: ProbingConfig = ProbingConfig()
    states: StatesConfig = StatesConfig()
    targets: TargetsConfig = TargetsConfig()
    store: StoreConfig = StoreConfig()
    http: HttpConfig = HttpConfig()
    report: ReportConfig = ReportConfig()
    alerts: AlertsConfig = AlertsConfig()
    gb28181: GbConfig = GbConfig()
    repairs: RepairsConfig = RepairsConfig()
    quality: QualityConfig = QualityConfig()
    cluster: ClusterConfig = ClusterConfig()

    # Where it was loaded from, for messages and relative paths. Not a YAML key.
    source: str = Field(default="<memory>", exclude=True)

    def unresolved_secrets(self) -> list[str]:
        """Credential references that cannot be resolved on this machine (names only)."""
        out = []
        for name, cred in self.credentials.items():
            try:
                cred.password()
            except LookupError as exc:
                out.append(f"$.credentials.{name}: {exc}")
        refs: list[tuple[str, object]] = [
            (f"$.alerts.receivers.{n}", r) for n, r in self.alerts.receivers.items()]
        if self.http.auth is not None:
            refs.append(("$.http.auth", self.http.auth))
        if self.store.backend == "postgresql":
            refs.append(("$.store", self.store))
        for where, env, file in self.gb28181.secret_refs():
            try:
                read_secret(env, file)
            except LookupError as exc:
                out.append(f"{where}: {exc}")
        refs.append(("$.repairs", self.repairs))
        for where, model in refs:
            for kind in ("url", "secret", "password", "token", "dsn"):
                env = getattr(model, f"{kind}_env", None)
                file = getattr(model, f"{kind}_file", None)
                if env or file:
                    try:
                        read_secret(env, file)
                    except LookupError as exc:
                        out.append(f"{where}: {exc}")
        return out


# --- loading ------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; an ops file with a key given twice is
    a mistake we want to name."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults`: merged below, its keys may be overridden on purpose
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; errors name the file, line and column. Alias expansion is bounded
    (:mod:`camwatch.yamlsafe`)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([Problem(where, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(where, "", f"expected UTF-8 text: {exc.reason}")]) from None
    try:
        return yamlsafe.load(text, _UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([Problem(where, pos, f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(where, "", f"invalid YAML: {exc}")]) from None


def yaml_path(loc: tuple[int | str, ...]) -> str:
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _nested_model(arg)) is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model that owns the last element of ``loc``, to list its valid keys. List indexes
    and mapping keys (a credential's name) along the way stay on the current model."""
    current = model
    for part in loc[:-1]:
        fields = {(f.alias or name): f for name, f in current.model_fields.items()}
        field = fields.get(str(part))
        if field is not None and (nested := _nested_model(field.annotation)) is not None:
            current = nested
    return current


def _keys_of(model: type[BaseModel]) -> list[str]:
    keys = [(f.alias or name) for name, f in model.model_fields.items() if name != "source"]
    return sorted(keys)


_PYDANTIC_EXPECT = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "path_type": "expected a file path",
}


def _message(err: Any, model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        keys = _keys_of(_model_at(model, loc))
        hint = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        msg = "unknown key"
        if hint:
            msg += f" (did you mean '{hint[0]}'?)"
        if keys:
            msg += f"; expected one of: {', '.join(keys)}"
        return msg
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error"):
        text = str(err["msg"])
        return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "enum" or kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}, got {err.get('input')!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{err['msg'].lower().replace('input should be', 'expected a value')}, " \
               f"got {err.get('input')!r}"
    base = _PYDANTIC_EXPECT.get(kind)
    if base:
        return f"{base}, got {err.get('input')!r}"
    return f"{err['msg']} (got {err.get('input')!r})"


def parse_config(data: Any, source: str = "<memory>", base_dir: Path | None = None) -> Config:
    """Validate a parsed YAML document. Raises :class:`ConfigError` with every problem."""
    if not isinstance(data, dict):
        raise ConfigError([Problem(source, "$", f"expected a mapping at the top, got "
                                                f"{type(data).__name__}")])
    try:
        cfg = Config.model_validate({**data, "source": source},
                                    context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [
            Problem(source, yaml_path(tuple(e["loc"])), _message(e, Config))
            for e in exc.errors()
        ]
        raise ConfigError(problems) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _cross_checks(cfg: Config) -> list[Problem]:
    out = []
    known = set(cfg.alerts.receivers)
    for where, r in cfg.repairs.receiver_names():  # ticket routes use the alerts' receivers
        if r not in known:
            out.append(Problem(cfg.source, where, f"unknown receiver {r!r}; expected one of "
                               f"alerts.receivers ({', '.join(sorted(known)) or 'none defined'})"))
    if cfg.inventory.default_credentials not in cfg.credentials and cfg.credentials:
        out.append(Problem(cfg.source, "$.inventory.default_credentials",
                           f"expected one of the credentials ({', '.join(cfg.credentials)}), "
                           f"got {cfg.inventory.default_credentials!r}"))
    if cfg.cluster.enabled and cfg.store.backend != "postgresql":
        out.append(Problem(cfg.source, "$.cluster.enabled",
                           f"expected store.backend postgresql (instances share their shards "
                           f"through one PostgreSQL), got {cfg.store.backend!r}"))
    for section in ("gb28181", "repairs"):  # each instance would run its own, unsharded
        if cfg.cluster.enabled and getattr(cfg, section).enabled:
            out.append(Problem(cfg.source, f"$.{section}.enabled",
                               f"expected false with cluster.enabled: {section} is not built "
                               f"for a cluster of instances yet (docs/scale-out.md)"))
    return out


def display_path(path: str | Path) -> str:
    """A path as a person wants it in a message: relative to the working directory when the
    file is below it, absolute otherwise."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p.resolve())


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; relative paths inside it are relative to the file."""
    p = Path(path)
    data = load_yaml(p)
    return parse_config(data, source=str(path), base_dir=p.resolve().parent)
