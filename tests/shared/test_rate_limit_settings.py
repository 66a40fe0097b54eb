"""RATE_LIMIT_<CLASS> settings: the ``<rate>/s[:<burst>]`` form, ``off``, clear refusals, and the
defaults (off in development, generous per-subject buckets in production)."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.ratelimit import PRODUCTION_DEFAULTS, ROUTE_CLASSES, RateSpec, parse_rate
from shared.settings import Settings, load_settings
from tests.conftest import SECRET

CLASSES = sorted(ROUTE_CLASSES)


@pytest.fixture(autouse=True)
def _no_rate_env(monkeypatch):
    for name in CLASSES:
        monkeypatch.delenv(f"RATE_LIMIT_{name.upper()}", raising=False)
    monkeypatch.delenv("OPSDECK_ENV", raising=False)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("10/s", RateSpec(10.0, 10)),
        ("10/s:25", RateSpec(10.0, 25)),
        (" 0.5/s ", RateSpec(0.5, 1)),
        ("0.001/s:3", RateSpec(0.001, 3)),
        ("2.5/s:1", RateSpec(2.5, 1)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_the_rate_form(text, spec):
    assert parse_rate(text) == spec


def test_a_spec_in_microseconds_per_token():
    assert RateSpec(4.0, 3).interval_us == 250_000
    assert RateSpec(4.0, 3).limit_us == 750_000
    assert RateSpec(0.001, 3).interval_us == 1_000_000_000


@pytest.mark.parametrize(
    "bad", ["abc", "10", "10/m", "10/s:", "/s", "0/s", "-1/s", "10/s:0", "10/s:1.5", "10/s:x", "1e9/s",
            "nan/s", "inf/s", "10/s:2000000", "10 / s"],
)  # fmt: skip
@pytest.mark.parametrize("name", CLASSES)
def test_bad_values_are_one_clear_config_error(monkeypatch, name, bad):
    env = f"RATE_LIMIT_{name.upper()}"
    monkeypatch.setenv(env, bad)
    with pytest.raises(ConfigError, match=rf"^{env}: .*expected '<rate>/s' or '<rate>/s:<burst>'") as info:
        load_settings(jwt_secret=SECRET)
    assert "\n" not in str(info.value)


def test_every_class_has_a_setting_and_a_production_default():
    assert set(PRODUCTION_DEFAULTS) == set(ROUTE_CLASSES)
    for name in CLASSES:
        assert f"rate_limit_{name}" in Settings.model_fields
        assert parse_rate(PRODUCTION_DEFAULTS[name]) is not None


def test_off_when_unset_in_development(tmp_path):
    settings = Settings(opsdeck_var_dir=tmp_path)
    assert settings.rate_limits == {}


def test_set_in_development_limits_that_class_only(tmp_path):
    settings = Settings(opsdeck_var_dir=tmp_path, rate_limit_read="5/s:7")
    assert settings.rate_limits == {"read": RateSpec(5.0, 7)}


def test_production_defaults_apply_unless_set_or_off(tmp_path):
    settings = Settings(
        opsdeck_env="production",
        opsdeck_var_dir=tmp_path,
        rate_limit_chat="off",
        rate_limit_read="1/s:2",
    )
    expected = {name: parse_rate(PRODUCTION_DEFAULTS[name]) for name in CLASSES}
    expected.pop("chat")
    expected["read"] = RateSpec(1.0, 2)
    assert settings.rate_limits == expected


def test_an_empty_value_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_SUBMIT", "")
    assert Settings(opsdeck_var_dir=tmp_path).rate_limits == {}
    production = Settings(opsdeck_env="production", opsdeck_var_dir=tmp_path)
    assert production.rate_limits["submit"] == parse_rate(PRODUCTION_DEFAULTS["submit"])


def test_render_declares_the_production_defaults():
    from tests.ops.test_render_blueprint import BLUEPRINT

    group = {e["key"]: e for g in BLUEPRINT["envVarGroups"] for e in g["envVars"]}
    for name in CLASSES:
        assert group[f"RATE_LIMIT_{name.upper()}"]["value"] == PRODUCTION_DEFAULTS[name]
