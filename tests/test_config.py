from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from camwatch.cli import main
from camwatch.config import load_config, parse_config
from camwatch.configbase import parse_duration, parse_fraction
from camwatch.errors import ConfigError
from tests.conftest import DATA, ROOT

INVALID = DATA / "invalid"
EXPECTED: dict[str, list[str]] = yaml.safe_load((INVALID / "expected.yaml").read_text("utf-8"))


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    assert cfg.probing.interval == 60.0
    assert cfg.targets.by_class == {1: 0.98, 2: 0.95, 3: 0.95}
    assert cfg.targets.by_project == {"智慧小区": 0.98}
    assert cfg.inventory.path == (ROOT / "examples" / "inventory.csv").resolve()
    assert cfg.credentials["default"].password_env == "CAMWATCH_CAMERA_PASSWORD"


def test_every_invalid_input_has_an_expectation() -> None:
    files = {p.name for p in INVALID.iterdir() if p.name != "expected.yaml"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_input_gives_exact_messages(name: str, in_tmp: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if name.endswith(".csv"):
        shutil.copy(INVALID / name, in_tmp / name)
        config = in_tmp / f"config-for-{name}.yaml"
        config.write_text(f"inventory: {{path: {name}}}\n", encoding="utf-8")
    else:
        text = (INVALID / name).read_text("utf-8").replace(
            "../../../examples/inventory.csv", str(ROOT / "examples" / "inventory.csv"))
        config = in_tmp / name
        config.write_text(text, encoding="utf-8")
    rc = main(["check-config", "-c", config.name])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = {line.strip().removeprefix("error: ") for line in err.splitlines()}
    for expected in EXPECTED[name]:
        assert expected in lines, f"missing {expected!r} in:\n{err}"


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"inventory": {"path": "x.csv"},
                      "probing": {"timeout": "fast", "interval": "soon", "level": "x"},
                      "states": {"fail_threshold": 0}, "extra": 1}, source="c.yaml")
    paths = [p.path for p in exc.value.problems]
    assert paths == sorted(set(paths), key=paths.index)  # no duplicates
    assert {"$.probing.timeout", "$.probing.interval", "$.probing.level",
            "$.states.fail_threshold", "$.extra"} <= set(paths)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("5s", 5.0), ("15m", 900.0), ("24h", 86400.0), ("1.5s", 1.5), ("7d", 604800.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["fast", "5", 5, "5 sec", "-1s", None, "1h30m"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


def test_fractions() -> None:
    assert parse_fraction("98%") == pytest.approx(0.98)
    assert parse_fraction(0.95) == 0.95
    for bad in (98, "abc%", 1.5, True):
        with pytest.raises(ValueError, match="expected a rate"):
            parse_fraction(bad)


def test_secret_by_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-file\n", encoding="utf-8")
    cfg = parse_config(
        {"inventory": {"path": "x.csv", "default_credentials": "a"},
         "credentials": {"a": {"username": "u", "password_env": "CAMWATCH_TEST_PW"},
                         "b": {"username": "u", "password_file": "pw"}}},
        base_dir=tmp_path)
    monkeypatch.delenv("CAMWATCH_TEST_PW", raising=False)
    assert cfg.unresolved_secrets() == [
        "$.credentials.a: environment variable CAMWATCH_TEST_PW is not set"]
    monkeypatch.setenv("CAMWATCH_TEST_PW", "s3cret-env")
    a = cfg.credentials["a"].password()
    b = cfg.credentials["b"].password()
    assert a is not None and a.reveal() == "s3cret-env"
    assert b is not None and b.reveal() == "s3cret-file"
    assert "s3cret" not in repr(cfg) + repr(a) + str(b)


def test_both_password_sources_rejected() -> None:
    with pytest.raises(ConfigError, match="either password_env or password_file"):
        parse_config({"inventory": {"path": "x.csv"}, "credentials": {
            "default": {"username": "u", "password_env": "X", "password_file": "/y"}}})


def test_example_config_shows_every_key() -> None:
    """config.example.yaml is the configuration reference: every key of every section is in
    it (with its default and a comment)."""
    from pydantic import BaseModel

    from camwatch.config import Config

    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text("utf-8"))
    missing: list[str] = []

    def walk(model: type[BaseModel], section: dict[str, object], path: str) -> None:
        for name, field in model.model_fields.items():
            key = field.alias or name
            if name == "source":
                continue
            if key not in section:
                missing.append(f"{path}.{key}")
                continue
            value = section[key]
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(value, dict):
                walk(ann, value, f"{path}.{key}")

    walk(Config, doc, "$")
    assert missing == []


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [1, *a]\n", "line 1, column 4: invalid YAML: an alias refers to a node that "
                        "contains it (a recursive structure); refused"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML: nesting too deep to parse"),
])
def test_recursive_or_too_deep_yaml_is_a_config_error(tmp_path: Path, text: str,
                                                      message: str) -> None:
    from camwatch.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    assert str(exc.value) == f"{path}: {message}"


def test_yaml_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    from camwatch.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text("base: &b {timeout: 5s, interval: 60s}\n"
                    "probing: {<<: *b, level: tcp}\nlist: [*b, *b]\n", encoding="utf-8")
    doc = load_yaml(path)
    assert doc["probing"] == {"timeout": "5s", "interval": "60s", "level": "tcp"}
    assert doc["list"] == [doc["base"], doc["base"]]


def test_intact_targets_default_to_the_online_ones_or_their_own() -> None:
    """targets.intact (完好率): absent, the online rate's targets (as configured); given, its
    own class, project and overrides, with min_channels shared."""
    same = parse_config({"inventory": {"path": "x.csv"},
                         "targets": {"class": {1: "99%"}, "min_channels": 3}})
    assert same.targets.intact_targets().by_class == {1: 0.99}
    own = parse_config({"inventory": {"path": "x.csv"}, "targets": {
        "min_channels": 3, "intact": {"class": {1: "97%", 2: 0.9},
                                      "overrides": [{"county": "鹿邑县", "class": 1,
                                                     "target": "96%"}]}}})
    t = own.targets.intact_targets()
    assert (t.by_class, t.by_project, t.min_channels) == ({1: 0.97, 2: 0.9},
                                                          {"智慧小区": 0.98}, 3)
    assert [o.target for o in t.overrides] == [0.96]
    assert own.targets.by_class == {1: 0.98, 2: 0.95, 3: 0.95}  # the online ones unchanged
