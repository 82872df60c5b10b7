"""The module boundaries hold, and the tools that guard them really bite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS_MAY_IMPORT = {"msgspec", "numpy"}


def run_linter(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_lint_imports_passes_on_the_project() -> None:
    result = run_linter(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_contracts_import_only_the_standard_library_msgspec_and_numpy() -> None:
    graph = grimp.build_graph("contracts", include_external_packages=True)
    allowed = set(sys.stdlib_module_names) | CONTRACTS_MAY_IMPORT
    offenders = {
        (module, imported)
        for module in graph.modules
        if module == "contracts" or module.startswith("contracts.")
        for imported in graph.find_modules_directly_imported_by(module)
        if not imported.startswith("contracts") and imported.split(".")[0] not in allowed
    }
    assert offenders == set()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("app", "contracts"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("target", "injected", "contract"),
    [
        ("contracts/common.py", "import sqlalchemy", "Contracts depend on nothing"),
        ("contracts/registry.py", "import app.kernel.db", "Contracts depend on nothing"),
        ("app/kernel/db.py", "import onnxruntime", "The kernel never imports torch"),
        ("app/kernel/module.py", "import app.bootstrap", "Layers"),
        ("app/console/_forms.py", "import app.modules.registry", "Layers"),  # siblings
        (
            "app/kernel/calls.py",
            "import app.modules.registry.signature",
            "Module internals are private",
        ),
        (  # service imports labels: a cycle inside the module
            "app/modules/inference/labels.py",
            "import app.modules.inference.service",
            "No import cycles inside a module",
        ),
    ],
)
def test_linter_fails_on_an_injected_forbidden_import(
    project_copy: Path, target: str, injected: str, contract: str
) -> None:
    assert run_linter(project_copy).returncode == 0
    path = project_copy / target
    path.write_text(path.read_text() + f"\n{injected}  # injected by the test\n")

    result = run_linter(project_copy)

    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), result.stdout
