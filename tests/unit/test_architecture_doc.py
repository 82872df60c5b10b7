"""docs/architecture.md shows the module graph `quarry modules --graph` draws from the specs."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

from app.cli import main

DOC = Path(__file__).parents[2] / "docs" / "architecture.md"
BLOCK = re.compile(r"<!-- quarry modules --graph -->\n```mermaid\n(.*?)```\n<!-- end -->", re.S)


def _generated() -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["modules", "--graph"]) == 0
    return out.getvalue()


def test_the_documented_graph_is_the_generated_one() -> None:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) == 1, "docs/architecture.md needs one generated module graph block"
    assert blocks[0] == _generated(), (
        "docs/architecture.md is stale: paste `quarry modules --graph` in"
    )


def test_the_graph_draws_contracts_and_events() -> None:
    graph = _generated()
    lines = {line.strip() for line in graph.splitlines()}
    assert graph.startswith("flowchart TD\n")
    assert 'inference["inference<br/>InferenceService"]' in lines
    assert "inference --> registry" in lines  # required contract
    assert "inference -.-> features" in lines  # optional contract
    assert "training -.-> inference" in lines
    assert "monitoring ==>|DriftDetected| training" in lines  # event, publisher to subscriber
    assert "registry ==>|ModelAliasChanged| inference" in lines
    assert "registry --> inference" not in lines


def test_the_graph_is_deterministic() -> None:
    assert _generated() == _generated()
