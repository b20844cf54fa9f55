"""The configuration file: YAML validated once, at load, into frozen typed objects.

pydantic v2 was chosen over dataclasses because it reports *every* error of a document in one
pass with its location, forbids unknown keys per model, and freezes the result; we only have to
turn its locations into ``$.probing.timeout`` paths and its messages into "expected ..., got ...".

Secrets appear here by reference only (``password_env`` / ``password_file``); they are resolved
when used, so ``check-config`` works on a machine that does not hold them (it warns).
"""

from __future__ import annotations

import contextlib
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from camwatch import yamlsafe
from camwatch.errors import ConfigError, Problem
from camwatch.probes.result import Level
from camwatch.secrets import Secret, read_secret

# --- scalar types -----------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``5s``, ``15m``, ``24h``, ``7d`` -> seconds. Bare numbers are refused: a
    unit-less ``60`` in an ops file is a guess waiting to go wrong."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError(f"expected a duration like '500ms', '5s', '15m' or '24h', got {value!r}")


def parse_fraction(value: object) -> float:
    """A target rate: ``'98%'`` or ``0.98``. ``98`` is refused (ambiguous)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            with contextlib.suppress(ValueError):
                value = float(text[:-1]) / 100.0
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    raise ValueError(f"expected a rate like '98%' or 0.98, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Fraction = Annotated[float, BeforeValidator(parse_fraction)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    if value is not None and base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


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
    default_credentials: str = "default"
    max_rows: PositiveInt = 1_000_000

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


class TargetsConfig(_Model):
    by_class: dict[int, Fraction] = Field(
        default_factory=lambda: {1: 0.98, 2: 0.95, 3: 0.95}, alias="class"
    )
    by_project: dict[str, Fraction] = Field(
        default_factory=lambda: {"智慧小区": 0.98}, alias="project"
    )
    overrides: tuple[TargetOverride, ...] = ()
    min_channels: Annotated[int, Field(ge=0)] = 10

    @field_validator("by_class")
    @classmethod
    def _known_classes(cls, v: dict[int, float]) -> dict[int, float]:
        bad = sorted(k for k in v if k not in (1, 2, 3, 4, 9))
        if bad:
            raise ValueError(f"expected point classes among 1, 2, 3, 4, 9, got {bad}")
        return v


class StoreConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: Path = Path("camwatch.db")

    _abs = field_validator("path")(_resolve_path)


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


class HttpConfig(_Model):
    listen: str = "127.0.0.1:9780"
    auth: HttpAuth | None = None
    allow_unauthenticated: bool = False
    metrics_auth: bool = Field(default=False, description="require auth on /metrics too")
    tls_cert: Path | None = None
    tls_key: Path | None = None

    _abs = field_validator("tls_cert", "tls_key")(_resolve_path)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port like '127.0.0.1:9780', got {v!r}")
        return v

    @model_validator(mode="after")
    def _safe_exposure(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if not is_loopback(self.host) and self.auth is None and not self.allow_unauthenticated:
            raise ValueError(
                f"listening on {self.host} exposes the API beyond this machine: set "
                f"http.auth (token_env/token_file or username + password_env/password_file), "
                f"or http.allow_unauthenticated: true")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ReportConfig(_Model):
    online_rate: Literal["time_weighted", "snapshot"] = "time_weighted"
    long_offline_days: PositiveInt = 3
    timezone: str = Field(default="Asia/Shanghai",
                          description="where months and days begin (IANA name)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from camwatch.reports.period import zone

        try:
            zone(v)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
        return v


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
        for where, model in refs:
            for kind in ("url", "secret", "password", "token"):
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
    if cfg.inventory.default_credentials not in cfg.credentials and cfg.credentials:
        out.append(Problem(cfg.source, "$.inventory.default_credentials",
                           f"expected one of the credentials ({', '.join(cfg.credentials)}), "
                           f"got {cfg.inventory.default_credentials!r}"))
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
