"""The Dockerfile, read statically (no Docker engine here): stages, paths, extras, users, health."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FINAL_STAGES = {
    "serve-cpu": {"cpu"},
    "inference-gpu": {"gpu"},
    "training": {"cpu", "training"},
}
WHEEL_EXTRAS = re.compile(r"quarryml-\*\.whl\)\[(?P<extras>[\w,-]+)\]")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in logical]


def _stages() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current = None
    for keyword, args in _instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3, f"unnamed stage: FROM {args}"
            assert words[1].upper() == "AS", f"unnamed stage: FROM {args}"
            current = stages[words[2]] = Stage(name=words[2], base=words[0])
        elif current is not None:
            current.instructions.append((keyword, args))
    return stages


STAGES = _stages()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_build_stage_and_every_final_stage_exist() -> None:
    assert {"build", *FINAL_STAGES} <= set(STAGES)


def test_every_copied_path_exists_in_the_repository() -> None:
    for stage in STAGES.values():
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if "--from=" in args:
                assert args.split("--from=")[1].split()[0] in STAGES, args
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{stage.name}: COPY {source} is not in the repo"


def test_the_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = [source for args in STAGES["build"].all("COPY") for source in shlex.split(args)[:-1]]
    assert copied
    assert not set(copied) & ignored


@pytest.mark.parametrize(("stage", "extras"), FINAL_STAGES.items())
def test_each_stage_installs_quarryml_with_its_extras(stage: str, extras: set[str]) -> None:
    installs = [m for args in STAGES[stage].all("RUN") for m in WHEEL_EXTRAS.finditer(args)]
    assert len(installs) == 1, f"{stage}: expected one pip install of the quarryml wheel"
    assert set(installs[0]["extras"].split(",")) == extras
    assert extras <= set(_pyproject()["project"]["optional-dependencies"])


def test_the_cpu_serving_image_has_no_torch() -> None:
    text = " ".join(args for _, args in STAGES["serve-cpu"].instructions)
    assert "torch" not in text
    assert "training" not in text
    assert STAGES["serve-cpu"].base == STAGES["training"].base  # slim python, no CUDA base


def test_the_training_extra_pins_torch() -> None:
    training = _pyproject()["project"]["optional-dependencies"]["training"]
    assert any(re.fullmatch(r"torch==[\d.]+", requirement) for requirement in training)


def test_the_gpu_image_starts_from_cuda_with_cudnn() -> None:
    base = STAGES["inference-gpu"].base
    args = {
        kw_args.split("=", 1)[0]: kw_args.split("=", 1)[1]
        for kw, kw_args in _instructions((ROOT / "Dockerfile").read_text())
        if kw == "ARG" and "=" in kw_args
    }
    image = args.get(base.strip("${}"), base)
    assert image.startswith("nvidia/cuda:")
    assert "cudnn" in image
    assert "runtime" in image


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_each_final_stage_runs_as_a_non_root_user(stage: str) -> None:
    users = STAGES[stage].all("USER")
    assert users, f"{stage} has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_each_final_stage_checks_its_health_with_python(stage: str) -> None:
    checks = STAGES[stage].all("HEALTHCHECK")
    assert len(checks) == 1
    assert "CMD python" in checks[0]
    assert "/healthz" in checks[0]
    assert STAGES[stage].all("ENTRYPOINT") == ['["quarry"]']
