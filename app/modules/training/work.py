"""What a training process is given and what it answers: msgspec Structs, length-prefixed.

The run (in the serving or worker process) sends one :class:`Work` on the child's stdin; the
child answers on its stdout an :class:`Epoch` after each epoch, then one :class:`Done` or
:class:`Failed`. Each message is a 4-byte big-endian length and that many bytes of msgpack.
Everything here is numpy and msgspec only: the side that starts a child never imports torch.
"""

from __future__ import annotations

from typing import IO

import msgspec

from contracts.common import Tensor
from contracts.features import Value
from contracts.registry import ReferenceProfile

__all__ = ["Done", "Epoch", "Failed", "Reply", "Work", "read", "read_work", "write"]

_LENGTH = 4


class Work(msgspec.Struct, frozen=True, kw_only=True):
    """One job's CPU-heavy part: fit, export, parity check, evaluation and reference profile."""

    job_id: str
    trainer: str
    trainer_origin: str
    """Where the run found the trainer (``module:qualname``), to name it if the child cannot."""
    trainer_modules: list[str]
    """Modules to import for ``@trainer`` plug-ins (``QUARRY_TRAINERS`` and the trainer's own)."""
    sys_path: list[str]
    """The starting process's import path: the child appends what its own lacks."""
    task: str
    hyperparameters: dict[str, Value]
    device: str
    seed: int
    columns: list[str]
    classes: list[str] | None
    x_train: Tensor
    y_train: Tensor
    x_valid: Tensor
    y_valid: Tensor
    parity_rows: int = 256


class Epoch(msgspec.Struct, frozen=True, kw_only=True, tag="epoch"):
    """An epoch ended (what ``TrainingData.report`` was called with)."""

    epoch: int
    epochs: int
    metrics: dict[str, float]


class Done(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """The exported model and everything the run registers with it."""

    onnx: bytes
    parity: float
    """The largest absolute difference between ONNX Runtime and the trained model (torch, or
    the trainer's own library) on held-out rows."""
    train_metrics: dict[str, float]
    scores: dict[str, float]
    """Validation metrics of the exported model."""
    profile: ReferenceProfile
    lineage: dict[str, str] = {}
    """More lineage entries (a self-exported model's feature importances, library versions)."""


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag="failed"):
    """The job cannot succeed; ``reason`` is shown on it."""

    reason: str


Reply = Epoch | Done | Failed

_encoder = msgspec.msgpack.Encoder()
_work = msgspec.msgpack.Decoder(Work)
_reply = msgspec.msgpack.Decoder(Reply)


def write(stream: IO[bytes], message: Work | Reply) -> None:
    """Send one message (and flush)."""
    body = _encoder.encode(message)
    stream.write(len(body).to_bytes(_LENGTH, "big") + body)
    stream.flush()


def read_work(stream: IO[bytes]) -> Work | None:
    """The work sent on ``stream``; ``None`` when it closed first."""
    body = _read(stream)
    return None if body is None else _work.decode(body)


def read(stream: IO[bytes]) -> Reply | None:
    """The next reply on ``stream``; ``None`` when it closed (the child exited)."""
    body = _read(stream)
    return None if body is None else _reply.decode(body)


def _read(stream: IO[bytes]) -> bytes | None:
    head = _exactly(stream, _LENGTH)
    if head is None:
        return None
    return _exactly(stream, int.from_bytes(head, "big"))


def _exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
