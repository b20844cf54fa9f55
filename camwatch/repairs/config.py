"""The ``repairs:`` section of the config: when a ticket opens, its deadlines, how it is
verified, where it goes.

Routes and receivers are the alerts' own: ``repairs.routes`` match a ticket's labels (county,
township, class, project, operator) like alert routes and name receivers defined under
``alerts.receivers`` (checked when the whole config is validated), so a maintainer's robot or
webhook is configured once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from camwatch.configbase import Duration, PositiveInt, _Model, _resolve_path
from camwatch.rules.alert_config import Route
from camwatch.secrets import Secret, read_secret


class Deadline(_Model):
    """Response and repair deadlines for the tickets it matches (first match wins; absent
    keys match anything)."""

    class_: int | None = Field(default=None, alias="class")
    project: str | None = None
    response: Duration
    repair: Duration

    def matches(self, klass: int | None, project: str) -> bool:
        return (self.class_ is None or self.class_ == klass) and \
            (self.project is None or self.project == project)


class RepairsConfig(_Model):
    enabled: bool = False
    open_after: Duration = Field(
        default=7200.0, description="a channel offline this long gets a ticket")
    open_after_by_class: dict[int, Duration] = Field(default_factory=dict)
    quality_after: PositiveInt = Field(
        default=2, le=1000,
        description="an online channel whose picture was degraded at this many consecutive "
                    "quality samples gets a quality ticket (with quality.enabled)")
    verify_for: Duration = Field(
        default=1800.0, description="online this long (continuously) before 核实结案")
    response: Duration = 7200.0  # default response deadline (from the ticket's opening)
    repair: Duration = 172800.0  # default repair deadline (from the ticket's opening)
    deadlines: tuple[Deadline, ...] = (
        Deadline.model_validate({"class": 1, "response": "2h", "repair": "24h"}),
    )
    remind_before: Duration = Field(
        default=7200.0, description="a reminder this long before the repair deadline")
    routes: tuple[Route, ...] = ()
    default_receivers: tuple[str, ...] = ()
    escalation_receivers: tuple[str, ...] = Field(
        default=(), description="told when a deadline passes (the second route)")
    link_base: str = Field(
        default="", description="base URL of camwatch's API in ticket messages "
                                "(default: http.listen)")
    # the inbound endpoint's own token (a county's 运维 platform): sent as
    # ``Authorization: Bearer`` or ``X-Camwatch-Token``
    token_env: str | None = None
    token_file: Path | None = None

    _abs = field_validator("token_file")(_resolve_path)

    @field_validator("open_after_by_class")
    @classmethod
    def _known_classes(cls, v: dict[int, float]) -> dict[int, float]:
        bad = [k for k in v if k not in (1, 2, 3, 4, 9)]
        if bad:
            raise ValueError(f"expected point classes among 1, 2, 3, 4, 9, got {bad}")
        return v

    @model_validator(mode="after")
    def _one_token(self) -> RepairsConfig:
        if self.token_env and self.token_file:
            raise ValueError("give either token_env or token_file, not both")
        for r in self.routes:
            if r.match.alert is not None:
                raise ValueError("repairs.routes: 'alert' does not apply to tickets; match on "
                                 "county, township, class, project or operator")
        return self

    def token(self) -> Secret | None:
        return read_secret(self.token_env, self.token_file)

    def open_after_for(self, klass: int | None) -> float:
        return self.open_after_by_class.get(klass, self.open_after) if klass is not None \
            else self.open_after

    def deadlines_for(self, klass: int | None, project: str) -> tuple[float, float]:
        """(response, repair) seconds for a ticket of this class and project."""
        for d in self.deadlines:
            if d.matches(klass, project):
                return d.response, d.repair
        return self.response, self.repair

    def receivers_for(self, labels: dict[str, str]) -> list[str]:
        out: list[str] = []
        for route in self.routes:
            if route.match.matches("repair_ticket", labels):
                out += [r for r in route.receivers if r not in out]
        return out if out else list(self.default_receivers)

    def receiver_names(self) -> list[tuple[str, str]]:
        """(YAML path, receiver) of every receiver named here."""
        out = [(f"$.repairs.routes[{i}]", r) for i, route in enumerate(self.routes)
               for r in route.receivers]
        out += [("$.repairs.default_receivers", r) for r in self.default_receivers]
        out += [("$.repairs.escalation_receivers", r) for r in self.escalation_receivers]
        return out
