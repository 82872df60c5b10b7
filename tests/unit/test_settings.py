"""Settings come from the environment, quarry.toml and flags, and bad values name their variable.

Kernel settings are loaded by ``load_settings``; each module's own settings (``[<module>]`` tables,
``QUARRY_<M>_*``) and every module name are checked against the build by the composition root
(``app.bootstrap.configure``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from app.bootstrap import AVAILABLE_MODULES, configure
from app.kernel.module_settings import Alias, configure_modules, load_module_settings
from app.kernel.settings import ConfigError, Settings, http_server_for, load_settings
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.settings import MonitoringSettings


class _Knobs(msgspec.Struct, frozen=True, kw_only=True):
    size: Annotated[int, msgspec.Meta(ge=1), Alias("QUARRY_OLD_SIZE")] = 8
    """QUARRY_DEMO_SIZE: a positive count."""
    share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """QUARRY_DEMO_SHARE: a fraction."""
    names: tuple[str, ...] = ()
    """QUARRY_DEMO_NAMES: a comma-separated list."""


def _demo(env: dict[str, str], table: dict[str, object] | None = None) -> _Knobs:
    return load_module_settings("demo", _Knobs, env, table or {})


def test_defaults_are_the_embedded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = configure(load_settings({}))
    assert settings.modules is None
    assert all(settings.hosts(spec.name) for spec in AVAILABLE_MODULES)
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
    settings = configure(
        load_settings(
            {
                "QUARRY_MODULES": "inference, registry",
                "QUARRY_REGISTRY_DATABASE_URL": "postgresql://db/registry",
                "QUARRY_REMOTE_FEATURES": "http://features:8002/",
            }
        )
    )
    assert settings.modules == ("inference", "registry")
    assert settings.hosts("registry")
    assert not settings.hosts("training")
    assert settings.database_url("registry") == "postgresql://db/registry"
    assert settings.remotes["features"] == "http://features:8002"
    gateway = configure(Settings(modules=()))  # hosts nothing, reaches modules elsewhere
    assert not any(gateway.hosts(spec.name) for spec in AVAILABLE_MODULES)


def test_a_module_setting_comes_from_its_variable_then_its_alias_then_its_table() -> None:
    assert _demo({}) == _Knobs()
    assert _demo({}, {"size": 3}).size == 3
    assert _demo({"QUARRY_OLD_SIZE": "4"}, {"size": 3}).size == 4
    assert _demo({"QUARRY_DEMO_SIZE": "5", "QUARRY_OLD_SIZE": "4"}).size == 5
    assert _demo({"QUARRY_DEMO_NAMES": "a, b,"}).names == ("a", "b")
    assert _demo({}, {"names": ["c"], "share": 1}) == _Knobs(names=("c",), share=1.0)


@pytest.mark.parametrize(
    ("env", "table", "message"),
    [
        ({"QUARRY_DEMO_SIZE": "0"}, {}, "QUARRY_DEMO_SIZE='0' is not valid: expected a positive"),
        ({"QUARRY_OLD_SIZE": "x"}, {}, "QUARRY_OLD_SIZE='x' is not valid: expected a positive"),
        ({"QUARRY_DEMO_SHARE": "1.5"}, {}, "expected a number between 0 and 1"),
        ({}, {"share": "lots"}, "quarry.toml [demo] share='lots' is not valid"),
        ({}, {"sise": 3}, "unknown setting(s) in the [demo] table of quarry.toml: sise"),
    ],
)
def test_a_bad_module_setting_names_its_variable_and_what_it_accepts(
    env: dict[str, str], table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _demo(env, table)
    assert message in str(raised.value)


def test_settings_given_in_code_win_over_the_environment() -> None:
    settings = Settings(module_environ={"QUARRY_DEMO_SIZE": "5"}).with_module(_Knobs(size=2))
    assert configure_modules(settings, {"demo": _Knobs}).module_config(_Knobs).size == 2
    loaded = configure_modules(Settings(module_environ={"QUARRY_DEMO_SIZE": "5"}), {"demo": _Knobs})
    assert loaded.module_config(_Knobs).size == 5
    assert Settings().module_config(_Knobs) == _Knobs()  # nothing loaded: the defaults
    with pytest.raises(ConfigError, match=r"_Knobs: Expected `int` >= 1 - at `\$.size`"):
        Settings().with_module(_Knobs(size=0))
    assert Settings().replace(port=9001).port == 9001


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"QUARRY_AUTH": "maybe"},
            "QUARRY_AUTH='maybe' is not valid: expected one of auto, on, off",
        ),
        ({"QUARRY_PORT": "http"}, "QUARRY_PORT"),
        ({"QUARRY_PORT": "-1"}, "QUARRY_PORT"),
        (
            {"QUARRY_MODULES": "registry,billing"},
            "QUARRY_MODULES='registry,billing' is not valid: expected 'all', 'none' or a"
            " comma-separated",
        ),
        ({"QUARRY_MODULES": ","}, "QUARRY_MODULES"),
        ({"QUARRY_BROKER_URL": "amqp://x"}, "QUARRY_BROKER_URL"),
        (
            {"QUARRY_PREDICTION_LOG_SAMPLE": "1.5"},
            "QUARRY_PREDICTION_LOG_SAMPLE='1.5' is not valid: expected a number between 0 and 1",
        ),
        ({"QUARRY_INFERENCE_MAX_BATCH_SIZE": "many"}, "QUARRY_INFERENCE_MAX_BATCH_SIZE='many'"),
        ({"QUARRY_INFERENCE_INLINE_MAX_US": "20000"}, "QUARRY_INFERENCE_INLINE_MAX_US='20000'"),
        (
            {"QUARRY_ONLINE_STORE_URL": "ftp://x"},
            "expected a redis://, sqlite:/// or postgresql://",
        ),
        ({"QUARRY_REMOTE_REGISTRY": "registry:8001"}, "QUARRY_REMOTE_REGISTRY"),
        ({"QUARRY_REMOTE_BILLING": "http://billing:8001"}, "QUARRY_REMOTE_BILLING: unknown module"),
        ({"QUARRY_REGISTRY_DATABASE_URL": "mysql://x"}, "QUARRY_REGISTRY_DATABASE_URL"),
        ({"QUARRY_BILLING_DATABASE_URL": "sqlite:///b.db"}, "QUARRY_BILLING_DATABASE_URL"),
        ({"QUARRY_OPEN_METRICS": "sometimes"}, "QUARRY_OPEN_METRICS"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        configure(load_settings(env))
    assert named in str(raised.value)


def test_modules_read_their_own_variables_older_names_and_quarry_toml_tables(
    tmp_path: Path,
) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text("[inference]\nmax_batch_size = 8\nprediction_log_sample = 1\n")
    env = {"QUARRY_MAX_BATCH_SIZE": "16", "QUARRY_MONITORING_SLO_MS": "250"}

    settings = configure(load_settings(env, config_file=config))

    inference = settings.module_config(InferenceSettings)
    assert (inference.max_batch_size, inference.prediction_log_sample) == (16, 1.0)
    assert settings.module_config(MonitoringSettings).slo_ms == 250.0
    env["QUARRY_INFERENCE_MAX_BATCH_SIZE"] = "32"  # the module's own name beats the older one
    again = configure(load_settings(env, config_file=config))
    assert again.module_config(InferenceSettings).max_batch_size == 32
    assert configure(load_settings({}, config_file=config)).module_config(
        InferenceSettings
    ) == InferenceSettings(max_batch_size=8, prediction_log_sample=1.0)


def test_unknown_toml_keys_and_missing_config_files_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({}, config_file=config)
    config.write_text("[inference]\nmax_batch = 8\n")
    with pytest.raises(
        ConfigError, match=r"unknown setting\(s\) in the \[inference\] table.*max_batch"
    ):
        configure(load_settings({}, config_file=config))
    config.write_text("[billing]\nseats = 1\n")
    with pytest.raises(ConfigError, match=r"\[billing\]"):
        configure(load_settings({}, config_file=config))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"QUARRY_CONFIG": str(tmp_path / "nope.toml")})


def test_server_workers_are_a_count_or_one_per_core() -> None:
    cores = len(os.sched_getaffinity(0))
    assert load_settings({}).workers == 1
    assert load_settings({"QUARRY_WORKERS": "3"}).workers == 3
    assert load_settings({"QUARRY_WORKERS": "auto"}).workers == cores
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match=r"QUARRY_WORKERS=.*at least 1, or auto"):
            load_settings({"QUARRY_WORKERS": bad})


def test_the_http_server_is_auto_unless_one_is_asked_for() -> None:
    assert load_settings({}).http_server == "auto"
    assert load_settings({"QUARRY_HTTP_SERVER": "uvicorn"}).http_server == "uvicorn"
    with pytest.raises(ConfigError, match=r"QUARRY_HTTP_SERVER=.*auto, granian, uvicorn"):
        load_settings({"QUARRY_HTTP_SERVER": "hypercorn"})


@pytest.mark.parametrize(
    ("choice", "workers", "cores", "server"),
    [
        ("auto", 1, 2, "granian"),  # a core is free for granian's HTTP thread
        ("auto", 3, 16, "granian"),
        ("auto", 2, 2, "uvicorn"),  # the workers fill every core
        ("auto", 1, 1, "uvicorn"),
        ("auto", 4, 2, "uvicorn"),
        ("granian", 2, 2, "granian"),  # a named server is kept
        ("uvicorn", 1, 16, "uvicorn"),
    ],
)
def test_auto_runs_granian_only_while_the_workers_leave_a_core_free(
    choice: str, workers: int, cores: int, server: str
) -> None:
    assert http_server_for(choice, workers, cores) == server
