"""The receivers of alerts (``alerts.receivers``) and how the outbox delivers to them
(``alerts.delivery``): the sinks' own settings, validated with the rest of the config.
URLs, robot keys and passwords appear by reference only (``*_env`` / ``*_file``) and are
resolved when a sink starts, never stored or logged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from camwatch.configbase import Duration, PositiveInt, _Model, _resolve_path
from camwatch.secrets import Secret, read_secret


class _SecretRef(_Model):
    """``<what>_env`` / ``<what>_file`` pairs: at most one of each pair."""

    @model_validator(mode="after")
    def _one_source_each(self) -> _SecretRef:
        fields = type(self).model_fields
        for name in fields:
            if name.endswith("_env"):
                base = name.removesuffix("_env")
                if getattr(self, name) and getattr(self, f"{base}_file", None):
                    raise ValueError(f"give either {base}_env or {base}_file, not both")
        return self


class _HttpReceiver(_SecretRef):
    url_env: str | None = None
    url_file: Path | None = None
    timeout: Duration = 10.0
    per_minute: Annotated[int, Field(ge=0)] = 0  # 0 = no rate limit

    _abs = field_validator("url_file")(_resolve_path)

    @model_validator(mode="after")
    def _url_given(self) -> _HttpReceiver:
        if not (self.url_env or self.url_file):
            raise ValueError("give the URL by reference: url_env or url_file "
                             "(never inline: it carries the key)")
        return self

    def url(self) -> Secret:
        secret = read_secret(self.url_env, self.url_file)
        assert secret is not None  # _url_given
        return secret


class MqttReceiver(_SecretRef):
    type: Literal["mqtt"]
    host: str
    port: Annotated[int, Field(gt=0, le=65535)] = 1883
    prefix: str = "camwatch"
    client_id: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    qos: Literal[0, 1, 2] = 1
    max_inflight: Annotated[int, Field(gt=0, le=1000)] = 20
    timeout: Duration = 10.0
    rates: bool = True  # publish retained rates on <prefix>/rates/...
    per_minute: Annotated[int, Field(ge=0)] = 0

    _abs = field_validator("password_file", "ca_file", "cert_file", "key_file")(_resolve_path)

    @field_validator("prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"expected a topic prefix like 'camwatch' or 'city/camwatch' "
                             f"(no +, #, leading or trailing /), got {v!r}")
        return v

    def password(self) -> Secret | None:
        return read_secret(self.password_env, self.password_file)


class WecomReceiver(_HttpReceiver):
    """企业微信群机器人: ``url_env`` holds https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."""

    type: Literal["wecom"]
    per_minute: Annotated[int, Field(ge=0)] = 20
    mentioned_mobiles: tuple[str, ...] = ()
    # alerts due together go out as one message of up to this many (a robot takes about 20
    # messages a minute); 1: one message per alert
    digest: Annotated[int, Field(ge=1, le=20)] = 10


class DingtalkReceiver(_HttpReceiver):
    """钉钉自定义机器人: ``url_env`` holds https://oapi.dingtalk.com/robot/send?access_token=...;
    ``secret_env`` the SEC... signing secret when the robot uses 加签."""

    type: Literal["dingtalk"]
    secret_env: str | None = None
    secret_file: Path | None = None
    per_minute: Annotated[int, Field(ge=0)] = 20
    at_mobiles: tuple[str, ...] = ()
    # alerts due together go out as one message of up to this many (a robot takes about 20
    # messages a minute); 1: one message per alert
    digest: Annotated[int, Field(ge=1, le=20)] = 10

    _abs_secret = field_validator("secret_file")(_resolve_path)

    def secret(self) -> Secret | None:
        return read_secret(self.secret_env, self.secret_file)


class WebhookReceiver(_HttpReceiver):
    """Generic JSON webhook (schema in docs/alerts.md); signed with HMAC-SHA256 when a
    secret is given."""

    type: Literal["webhook"]
    secret_env: str | None = None
    secret_file: Path | None = None

    _abs_secret = field_validator("secret_file")(_resolve_path)

    def secret(self) -> Secret | None:
        return read_secret(self.secret_env, self.secret_file)


class AlertmanagerReceiver(_HttpReceiver):
    """Prometheus Alertmanager: ``url_env`` holds its base URL (http://alertmanager:9093)."""

    type: Literal["alertmanager"]
    firing_ttl: Duration = Field(
        default=90 * 86400.0,
        description="endsAt of a firing alert: camwatch sends the resolution itself; this "
                    "only ends alerts of a camwatch that was removed")
    generator_url: str = ""


Receiver = Annotated[
    MqttReceiver | WecomReceiver | DingtalkReceiver | WebhookReceiver | AlertmanagerReceiver,
    Field(discriminator="type"),
]


class DeliveryConfig(_Model):
    backoff_initial: Duration = 1.0
    backoff_max: Duration = 300.0
    poll: Duration = 5.0  # look at the outbox at least this often, even without notify()
    batch: PositiveInt = 50  # outbox items read per round


