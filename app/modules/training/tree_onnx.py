"""Tree ensembles to ONNX: the converters' graphs made to answer like the torch exports.

XGBoost and LightGBM boosters go through onnxmltools, scikit-learn forests through skl2onnx,
without ZipMap. Their graphs answer ``label`` and ``probabilities`` (classifiers) or
``variable`` ``[N, 1]`` (regressors); :func:`finish` keeps ``probabilities`` only, or reshapes
the regressor's output into ``prediction`` ``[N]``, so served models look the same whichever
trainer made them, and names the classifier's classes by the dataset's class labels.

LightGBM compares float32 inputs with float64 thresholds, which the converter rounds to the
nearest float32: a value between the two goes the other way in ONNX. :func:`lightgbm_onnx`
first rounds every threshold down to a float32, which answers alike for every float32 input.
The libraries are imported inside the functions only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from app.modules.training.dataset import JobFailed

if TYPE_CHECKING:
    import lightgbm
    import onnx
    import xgboost

__all__ = ["INPUT", "OPSET", "finish", "forest_onnx", "lightgbm_onnx", "xgboost_onnx"]

INPUT = "features"
"""The input name of the exported models (as the torch exports')."""
OPSET = 15
"""The default-domain ONNX opset of tree exports (the highest onnxmltools supports)."""
ML_OPSET = 3
"""The ``ai.onnx.ml`` opset asked of skl2onnx (what ONNX Runtime runs everywhere)."""

_ML = "ai.onnx.ml"
_PROBABILITIES = "probabilities"
_PREDICTION = "prediction"


def xgboost_onnx(
    booster: xgboost.Booster, n_features: int, *, task: str, classes: list[str] | None
) -> bytes:
    """The ONNX bytes of an XGBoost booster (every tree it holds)."""

    def convert() -> onnx.ModelProto:
        from onnxmltools import convert_xgboost  # type: ignore[import-untyped]
        from onnxmltools.convert.common.data_types import (  # type: ignore[import-untyped]
            FloatTensorType,
        )

        return convert_xgboost(  # type: ignore[no-any-return]
            booster, initial_types=[(INPUT, FloatTensorType([None, n_features]))],
            target_opset=OPSET,
        )  # fmt: skip

    return finish(_converted("XGBoost", convert), task=task, classes=classes)


def lightgbm_onnx(
    booster: lightgbm.Booster, n_features: int, *, task: str, classes: list[str] | None
) -> bytes:
    """The ONNX bytes of a LightGBM booster (up to its best iteration, when it has one)."""

    def convert() -> onnx.ModelProto:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        return convert_lightgbm(  # type: ignore[no-any-return]
            _float32_thresholds(booster),
            initial_types=[(INPUT, FloatTensorType([None, n_features]))],
            target_opset=OPSET, zipmap=False,
        )  # fmt: skip

    return finish(_converted("LightGBM", convert), task=task, classes=classes)


def forest_onnx(model: Any, n_features: int, *, task: str, classes: list[str] | None) -> bytes:
    """The ONNX bytes of a fitted scikit-learn forest."""

    def convert() -> onnx.ModelProto:
        from skl2onnx import convert_sklearn  # type: ignore[import-untyped]
        from skl2onnx.common.data_types import FloatTensorType  # type: ignore[import-untyped]

        options = {id(model): {"zipmap": False}} if task == "classification" else None
        return convert_sklearn(  # type: ignore[no-any-return]
            model, initial_types=[(INPUT, FloatTensorType([None, n_features]))],
            target_opset={"": OPSET, _ML: ML_OPSET}, options=options,
        )  # fmt: skip

    return finish(_converted("scikit-learn", convert), task=task, classes=classes)


def finish(model: onnx.ModelProto, *, task: str, classes: list[str] | None) -> bytes:
    """The bytes of ``model`` answering ``probabilities`` (classification) or ``prediction``
    ``[N]`` (regression) only; ``JobFailed`` when the converter's graph has no such output."""
    from onnx import helper

    graph = model.graph
    graph.name = "tree_ensemble"  # not the converter's random one: a seeded job's bytes repeat
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        # converters that emit ai.onnx.ml nodes only import no default domain, which the
        # Reshape added below (and the registry's checker) needs
        model.opset_import.append(helper.make_opsetid("", OPSET))
    if task == "classification":
        if _PROBABILITIES not in [o.name for o in graph.output]:
            raise JobFailed(_unexpected(graph, f"a {_PROBABILITIES!r} output"))
        _keep_outputs(graph, _PROBABILITIES)
        _name_classes(graph, classes)
    else:
        if len(graph.output) != 1:
            raise JobFailed(_unexpected(graph, "one output"))
        _flat_prediction(graph)
    return bytes(model.SerializeToString())


# --- helpers --------------------------------------------------------------------------------


def _converted(library: str, convert: Callable[[], onnx.ModelProto]) -> onnx.ModelProto:
    try:
        return convert()
    except Exception as exc:
        raise JobFailed(
            f"converting the {library} model to ONNX failed: {type(exc).__name__}: {exc}"
        ) from exc


def _unexpected(graph: onnx.GraphProto, wanted: str) -> str:
    names = ", ".join(o.name for o in graph.output) or "none"
    return f"the converted ONNX model has no {wanted}; its outputs: {names}"


def _keep_outputs(graph: onnx.GraphProto, *names: str) -> None:
    """Drop the other outputs, and the nodes, initializers and value infos only they needed."""
    for output in [o for o in graph.output if o.name not in names]:
        graph.output.remove(output)
    needed = set(names)
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    made = {name for node in kept for name in node.output}
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for initializer in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(initializer)
    for info in [v for v in graph.value_info if v.name not in made]:
        graph.value_info.remove(info)


def _name_classes(graph: onnx.GraphProto, classes: list[str] | None) -> None:
    """Give the classifier node the dataset's class labels instead of the ids ``0..C-1``, when
    nothing reads its label output (whose type becomes text)."""
    from onnx import helper

    if not classes:
        return
    read = {name for node in graph.node for name in node.input}
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.domain != _ML or not node.op_type.endswith("Classifier"):
            continue
        ids = next((a for a in node.attribute if a.name == "classlabels_int64s"), None)
        label = node.output[0]
        if ids is None or list(ids.ints) != list(range(len(classes))):
            continue
        if label in read or label in outputs:
            continue
        node.attribute.remove(ids)
        node.attribute.append(helper.make_attribute("classlabels_strings", list(classes)))


def _flat_prediction(graph: onnx.GraphProto) -> None:
    """Turn the single ``[N, 1]`` (or ``[N]``) output into float32 ``prediction`` ``[N]``."""
    from onnx import TensorProto, helper

    output = graph.output[0]
    dims = output.type.tensor_type.shape.dim
    batch: str | int = "N"
    if dims:
        batch = dims[0].dim_value if dims[0].HasField("dim_value") else (dims[0].dim_param or "N")
    source = output.name
    if output.type.tensor_type.elem_type != TensorProto.FLOAT:
        graph.node.append(
            helper.make_node("Cast", [source], [f"{source}_float"], to=TensorProto.FLOAT)
        )
        source = f"{source}_float"
    shape = f"{_PREDICTION}_shape"
    graph.initializer.append(helper.make_tensor(shape, TensorProto.INT64, [1], [-1]))
    graph.node.append(helper.make_node("Reshape", [source, shape], [_PREDICTION]))
    graph.output.remove(output)
    graph.output.append(helper.make_tensor_value_info(_PREDICTION, TensorProto.FLOAT, [batch]))


def _float32_thresholds(booster: lightgbm.Booster) -> lightgbm.Booster:
    """A copy of ``booster`` (its best iteration, if any) whose thresholds are float32 values:
    each rounded down, so ``x <= t`` answers alike for every float32 ``x``."""
    import lightgbm

    text = booster.model_to_string()

    def round_down(match: re.Match[str]) -> str:
        values = np.array(match.group(1).split(), dtype=np.float64)
        low = values.astype(np.float32)
        above = low.astype(np.float64) > values
        low[above] = np.nextafter(low[above], np.float32(-np.inf))
        return "threshold=" + " ".join(repr(float(v)) for v in low)

    text = re.sub(r"^threshold=(.*)$", round_down, text, flags=re.MULTILINE)
    # the trees' byte sizes changed: without them the model is read tree by tree
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.MULTILINE)
    return lightgbm.Booster(model_str=text)
