"""What a version predicts: its task and class labels, and ZipMap outputs made servable.

scikit-learn models exported by skl2onnx (and onnxmltools) answer class probabilities through a
``ZipMap`` node by default: a sequence of maps, one per row, which no tensor protocol carries.
:func:`remove_zipmap` replaces each ZipMap that produces a graph output with an ``Identity`` of
its input, so the output keeps its name and becomes the float tensor ``[N, C]`` the ZipMap was
fed; the ZipMap's class labels become the version's classes.

The task is never guessed from an output's name alone (:func:`decide`): an explicit task wins;
else class labels in the graph (a ZipMap or a classifier node), or a float ``[N, C]`` output next
to a one-dimensional label output, make a classifier; else the task a reference profile carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from contracts.common import InvalidInput
from contracts.registry import Lineage, ReferenceProfile, Signature, Task, TensorSpec

__all__ = [
    "CONVERTED",
    "Converted",
    "check_classes",
    "check_task",
    "decide",
    "probability_output",
    "remove_zipmap",
]

CONVERTED = "zipmap-removed"
"""``params["converted"]`` of a version whose ZipMap outputs were replaced by tensors."""

_ML = "ai.onnx.ml"
_FLOATS = ("FP32", "FP64", "FP16")
_MAX_CLASSES = 100_000
_MAX_LABEL = 1_000


@dataclass(frozen=True)
class Converted:
    """The bytes to store, and the class labels the graph names (empty when it names none)."""

    data: bytes
    classes: list[str]
    zipmap_removed: bool


def remove_zipmap(data: bytes) -> Converted:
    """``data`` with every ZipMap output replaced by its probability tensor, and the classes.

    Bytes that do not parse are answered unchanged: the registry's signature check says what is
    wrong with them. Classes come from the ZipMap, else from the one ``ai.onnx.ml`` node of the
    main graph that carries ``classlabels_strings`` or ``classlabels_int64s`` (``_ints``).
    """
    if _ML.encode() not in data:  # no ZipMap, no classifier node: spare parsing a big model
        return Converted(data=data, classes=[], zipmap_removed=False)
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception:
        return Converted(data=data, classes=[], zipmap_removed=False)
    graph = model.graph
    outputs = {o.name: i for i, o in enumerate(graph.output)}
    zipmaps = [
        (i, node)
        for i, node in enumerate(graph.node)
        if node.op_type == "ZipMap" and node.domain == _ML and node.output[0] in outputs
    ]
    classes = _labels(zipmaps[0][1]) if zipmaps else _classifier_labels(graph)
    if not zipmaps:
        return Converted(data=data, classes=classes, zipmap_removed=False)
    for index, node in reversed(zipmaps):
        name = node.output[0]
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node("Identity", [node.input[0]], [name]))
        position = outputs[name]
        graph.output.remove(graph.output[position])
        graph.output.insert(position, _probability_value(graph, name, len(_labels(node))))
    return Converted(data=model.SerializeToString(), classes=classes, zipmap_removed=True)


def _probability_value(graph: onnx.GraphProto, name: str, classes: int) -> onnx.ValueInfoProto:
    batch: str | int = "N"
    first = graph.output[0].type
    if first.HasField("tensor_type") and first.tensor_type.shape.dim:
        dim = first.tensor_type.shape.dim[0]
        batch = dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "N")
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, classes or None])


def _labels(node: onnx.NodeProto) -> list[str]:
    for attribute in node.attribute:
        if attribute.name == "classlabels_strings":
            return [s.decode("utf-8", errors="replace") for s in attribute.strings]
        if attribute.name in {"classlabels_int64s", "classlabels_ints"}:
            return [str(i) for i in attribute.ints]
    return []


def _classifier_labels(graph: onnx.GraphProto) -> list[str]:
    found = [_labels(n) for n in graph.node if n.domain == _ML and n.op_type.endswith("Classifier")]
    found = [labels for labels in found if labels]
    return found[0] if len(found) == 1 else []


def probability_output(signature: Signature) -> TensorSpec | None:
    """The output holding class probabilities: the first float output of rank 2."""
    return next((o for o in signature.outputs if o.dtype in _FLOATS and len(o.shape) == 2), None)


def _label_output(signature: Signature) -> TensorSpec | None:
    return next((o for o in signature.outputs if len(o.shape) == 1), None)


def check_task(task: str | None) -> Task | None:
    """``task`` when it is ``classification``, ``regression`` or ``None``."""
    if task is None:
        return None
    if task == "classification":
        return "classification"
    if task == "regression":
        return "regression"
    raise InvalidInput(
        f"unknown task {task!r}; expected 'classification' or 'regression'",
        details={"field": "task"},
    )


def check_classes(classes: list[str], signature: Signature) -> list[str]:
    """``classes`` when they are distinct texts matching the probability output's static class
    dimension; :class:`InvalidInput` otherwise."""
    if not classes:
        return []
    if len(classes) > _MAX_CLASSES or not all(
        isinstance(c, str) and c and len(c) <= _MAX_LABEL and "\x00" not in c for c in classes
    ):
        raise InvalidInput(
            f"classes must be at most {_MAX_CLASSES} non-empty texts of at most {_MAX_LABEL}"
            " characters, without NUL",
            details={"field": "classes"},
        )
    if len(set(classes)) != len(classes):
        raise InvalidInput("classes must be distinct", details={"field": "classes"})
    output = probability_output(signature)
    if output is None:
        raise InvalidInput(
            "classes name the columns of a probability output, and this model has none (no"
            " float output of shape [N, C])",
            details={"field": "classes"},
        )
    if output.shape[1] >= 0 and output.shape[1] != len(classes):
        raise InvalidInput(
            f"{len(classes)} classes given, but output {output.name!r} holds {output.shape[1]}"
            " class probabilities per row",
            details={"field": "classes", "output": output.name, "expected": output.shape[1]},
        )
    return list(classes)


def decide(
    *,
    task: str | None,
    classes: list[str],
    signature: Signature,
    graph_classes: list[str],
    lineage: Lineage,
    profile: ReferenceProfile | None,
) -> tuple[Task | None, list[str]]:
    """The version's task and classes: what the caller said, else what the graph, lineage and
    reference profile say (see the module's docstring)."""
    chosen = check_task(task)
    labels = list(classes) or graph_classes or _lineage_classes(lineage)
    if chosen is None:
        if graph_classes or (
            probability_output(signature) is not None and _label_output(signature) is not None
        ):
            chosen = "classification"
        elif profile is not None:
            chosen = profile.task
    if chosen == "regression":
        if classes:
            raise InvalidInput("a regression model has no classes", details={"field": "classes"})
        labels = []
    return chosen, check_classes(labels, signature)


def _lineage_classes(lineage: Lineage) -> list[str]:
    text = lineage.extra.get("classes")
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    return []
