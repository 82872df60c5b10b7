"""Settings come from the environment, quarry.toml and flags, and bad values name their variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.kernel.settings import MODULE_NAMES, ConfigError, load_settings


def test_defaults_are_the_embedded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.modules == MODULE_NAMES
    assert settings.database_url("registry") == "sqlite:///.quarry/registry.db"
    assert settings.broker_url == settings.events_url == "memory://"
    assert settings.keys_file == Path(".quarry/api_keys.toml")
    assert not settings.auth_required("127.0.0.1")
    assert settings.auth_required("0.0.0.0")


def test_environment_beats_toml_and_flags_beat_both(tmp_path: Path) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\n[remote]\ninference = "http://gpu:8001"\n')

    settings = load_settings({"QUARRY_PORT": "9100"}, config_file=config, host="127.0.0.2")

    assert settings.port == 9100
    assert settings.host == "127.0.0.2"
    assert settings.remotes == {"inference": "http://gpu:8001"}
    assert not settings.hosts("inference")


def test_module_lists_and_per_module_urls() -> None:
    settings = load_settings(
        {
            "QUARRY_MODULES": "inference, registry",
            "QUARRY_REGISTRY_DATABASE_URL": "postgresql://db/registry",
            "QUARRY_REMOTE_FEATURES": "http://features:8002/",
        }
    )
    assert settings.modules == ("registry", "inference")
    assert settings.database_url("registry") == "postgresql://db/registry"
    assert settings.remotes["features"] == "http://features:8002"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"QUARRY_AUTH": "maybe"},
            "QUARRY_AUTH='maybe' is not valid: expected one of auto, on, off",
        ),
        ({"QUARRY_PORT": "http"}, "QUARRY_PORT"),
        ({"QUARRY_PORT": "-1"}, "QUARRY_PORT"),
        ({"QUARRY_MODULES": "registry,billing"}, "QUARRY_MODULES"),
        ({"QUARRY_BROKER_URL": "amqp://x"}, "QUARRY_BROKER_URL"),
        ({"QUARRY_PREDICTION_LOG_SAMPLE": "1.5"}, "QUARRY_PREDICTION_LOG_SAMPLE"),
        ({"QUARRY_REMOTE_REGISTRY": "registry:8001"}, "QUARRY_REMOTE_REGISTRY"),
        ({"QUARRY_REGISTRY_DATABASE_URL": "mysql://x"}, "QUARRY_REGISTRY_DATABASE_URL"),
        ({"QUARRY_OPEN_METRICS": "sometimes"}, "QUARRY_OPEN_METRICS"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        load_settings(env)


def test_unknown_toml_keys_and_missing_config_files_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({}, config_file=config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"QUARRY_CONFIG": str(tmp_path / "nope.toml")})
