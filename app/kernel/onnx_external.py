"""Finding the tensors an ONNX model keeps outside its own bytes ("external data").

A tensor with external data names a file (``location``) that ONNX Runtime reads when it builds
the session; a model loaded from bytes resolves that name against the server's working
directory. Quarry models are data, never a path to the host, so the registry refuses such a
model at upload and inference refuses it again before opening a session. Tensors hide in many
places, and :func:`external_tensors` looks in every one: initializers and sparse initializers,
node attributes (``TENSOR``, ``TENSORS``, ``SPARSE_TENSOR(S)``), subgraphs of ``If``, ``Loop``
and ``Scan`` (``GRAPH``, ``GRAPHS``) at any depth, the model's local functions (their nodes and
attribute defaults) and training graphs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from onnx import (
    AttributeProto,
    FunctionProto,
    GraphProto,
    ModelProto,
    NodeProto,
    SparseTensorProto,
    TensorProto,
)

__all__ = ["NO_FOLDER", "external_tensors", "harden_session_options", "has_external_data"]

NO_FOLDER = os.devnull
"""Where ONNX Runtime looks for external data: a device, not a folder, so nothing is there."""


def harden_session_options(options: Any) -> Any:
    """``options`` (an ``onnxruntime.SessionOptions``) set so that a session built from bytes
    reads nothing from the host: the bytes are parsed as ONNX only (never as an ORT-format
    file), and a relative external-data location resolves under :data:`NO_FOLDER`, where
    nothing can exist (absolute ones and ones that climb out with ``..`` ONNX Runtime refuses
    by itself)."""
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", NO_FOLDER
    )
    return options


def has_external_data(tensor: TensorProto) -> bool:
    """Whether ``tensor`` points outside the model: an ``EXTERNAL`` data location, or any
    ``external_data`` entry (ONNX Runtime reads either)."""
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def external_tensors(model: ModelProto) -> list[str]:
    """Where ``model`` holds tensors with external data, one readable path per tensor
    (``graph 'main' > node 'If_0' attribute 'then_branch' > ...``); empty when none."""
    return [where for where, tensor in _tensors_of_model(model) if has_external_data(tensor)]


def _tensors_of_model(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    yield from _tensors_of_graph(model.graph, f"graph {model.graph.name!r}")
    for function in model.functions:
        yield from _tensors_of_function(function)
    for number, info in enumerate(model.training_info):
        yield from _tensors_of_graph(info.initialization, f"training_info[{number}] initialization")
        yield from _tensors_of_graph(info.algorithm, f"training_info[{number}] algorithm")


def _tensors_of_function(function: FunctionProto) -> Iterator[tuple[str, TensorProto]]:
    where = f"function {function.domain or 'ai.onnx'}.{function.name}"
    for attribute in function.attribute_proto:
        yield from _tensors_of_attribute(attribute, f"{where} attribute {attribute.name!r}")
    yield from _tensors_of_nodes(function.node, where)


def _tensors_of_graph(graph: GraphProto, where: str) -> Iterator[tuple[str, TensorProto]]:
    for tensor in graph.initializer:
        yield f"{where} initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield from _tensors_of_sparse(sparse, f"{where} sparse initializer")
    yield from _tensors_of_nodes(graph.node, where)


def _tensors_of_nodes(nodes: Iterable[NodeProto], where: str) -> Iterator[tuple[str, TensorProto]]:
    for number, node in enumerate(nodes):
        name = node.name or f"#{number} ({node.op_type})"
        for attribute in node.attribute:
            inside = f"{where} > node {name!r} attribute {attribute.name!r}"
            yield from _tensors_of_attribute(attribute, inside)


def _tensors_of_attribute(
    attribute: AttributeProto, where: str
) -> Iterator[tuple[str, TensorProto]]:
    # every field is looked at, whatever ``type`` says: a hostile file need not be consistent
    if attribute.HasField("t"):
        yield where, attribute.t
    for tensor in attribute.tensors:
        yield where, tensor
    if attribute.HasField("sparse_tensor"):
        yield from _tensors_of_sparse(attribute.sparse_tensor, where)
    for sparse in attribute.sparse_tensors:
        yield from _tensors_of_sparse(sparse, where)
    if attribute.HasField("g"):
        yield from _tensors_of_graph(attribute.g, f"{where} > graph {attribute.g.name!r}")
    for graph in attribute.graphs:
        yield from _tensors_of_graph(graph, f"{where} > graph {graph.name!r}")


def _tensors_of_sparse(sparse: SparseTensorProto, where: str) -> Iterator[tuple[str, TensorProto]]:
    name = sparse.values.name or "(unnamed)"
    yield f"{where} {name!r} values", sparse.values
    yield f"{where} {name!r} indices", sparse.indices
