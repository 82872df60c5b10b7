"""Trainers: the plug-in API (:func:`trainer`, :class:`TrainingData`) and their discovery.

A trainer is a function ``fn(data: TrainingData) -> (model, metrics)`` decorated with
:func:`trainer`, where the model is a ``torch.nn.Module`` (the job exports it to ONNX) or an
:class:`OnnxModel` the trainer exported itself (gradient-boosted trees, forests...). The
decorator only attaches a :class:`Trainer` to the function and adds it to the process-wide
default registry; a :class:`TrainerRegistry` collects trainers from the modules it is told to
import (:meth:`TrainerRegistry.discover`) and from the ``quarry.trainers`` entry points of
installed packages.

Nothing here imports torch: listing trainers and checking hyperparameters work on hosts without
it. The built-in trainers live in ``builtin.py`` (torch) and ``trees.py`` (XGBoost, LightGBM,
scikit-learn), which import their libraries only inside the trainers' bodies, so importing them
to list the trainers is cheap.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec
import numpy as np

from contracts.common import InvalidInput, validate_name
from contracts.features import Value
from contracts.training import TrainerInfo

if TYPE_CHECKING:
    import torch
    from typing_extensions import TypeIs

__all__ = [
    "ENTRY_POINT_GROUP",
    "OnnxModel",
    "Task",
    "Trainer",
    "TrainerRegistry",
    "TrainingData",
    "import_torch",
    "pick_device",
    "trainer",
]

ENTRY_POINT_GROUP = "quarry.trainers"
"""Entry points of this group name a module of trainers or one trainer function."""

Task = Literal["classification", "regression"]
TrainerFn = Callable[["TrainingData"], tuple["torch.nn.Module | OnnxModel", dict[str, float]]]
F = TypeVar("F", bound=Callable[..., Any])

_TASKS: tuple[Task, ...] = ("classification", "regression")
_MARK = "__quarry_trainer__"
_BUILTIN_MODULES = ("app.modules.training.builtin", "app.modules.training.trees")
_TORCHLESS_MODULES = ("app.modules.training.trees",)
_TYPE_NAMES: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """Everything a trainer gets: the prepared splits and how to run.

    ``x_*`` are float32 ``[n, k]`` model inputs (already transformed: standardised, one-hot
    encoded...). ``y_*`` are int64 class ids ``0..C-1`` for classification (``classes[i]`` is
    the label text of id ``i``) and float32 ``[n]`` targets for regression (``classes`` is
    ``None``). ``hyperparameters`` are checked and have every default filled in.
    ``report(epoch, epochs, metrics)`` is to be called after each epoch; it raises to stop the
    training (a cancelled job), and the trainer lets that exception propagate.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    columns: list[str]
    classes: list[str] | None
    hyperparameters: dict[str, Value]
    device: str
    seed: int
    report: Callable[[int, int, dict[str, float]], None]
    threads: int = 1
    """CPU threads the trainer may use (the job's share of the host)."""


@dataclass(frozen=True, kw_only=True)
class OnnxModel:
    """A model the trainer exported to ONNX itself, and how to check that export.

    ``onnx`` takes one float32 input ``[N, k]`` (any name, any ``N``) and answers, like the
    exports of torch modules, ``probabilities`` (float32 ``[N, C]``) for classification or
    ``prediction`` (float32 ``[N]``) for regression; other outputs are allowed.
    ``predict(x)`` answers the same output with the native library for float32 rows ``x``: the
    job compares the two on held-out rows and fails on a mismatch. ``feature_importances``
    (column -> importance) and ``lineage`` (text -> text) are recorded in the registered
    version's lineage.
    """

    onnx: bytes
    predict: Callable[[np.ndarray], np.ndarray]
    feature_importances: Mapping[str, float] | None = None
    lineage: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Trainer:
    """A registered trainer: its name, task, hyperparameter defaults and function."""

    name: str
    task: Task
    defaults: Mapping[str, Value]
    """Hyperparameter name -> default; the default's type is the hyperparameter's (None: any)."""
    description: str
    fn: TrainerFn

    @property
    def origin(self) -> str:
        """Where the function is defined, as ``module:qualname``."""
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    @property
    def builtin(self) -> bool:
        """Whether Quarry ships this trainer."""
        return self.fn.__module__ in _BUILTIN_MODULES

    @property
    def needs_torch(self) -> bool:
        """Whether the trainer may use torch: all but the built-in tree ensembles, which run on
        the CPU without it."""
        return self.fn.__module__ not in _TORCHLESS_MODULES

    def info(self) -> TrainerInfo:
        """The contract's description of this trainer."""
        return TrainerInfo(
            name=self.name,
            task=self.task,
            description=self.description,
            hyperparameters={
                key: f"{_type_name(default)} = {msgspec.json.encode(default).decode()}"
                for key, default in sorted(self.defaults.items())
            },
            builtin=self.builtin,
        )

    def train(self, data: TrainingData) -> tuple[torch.nn.Module | OnnxModel, dict[str, float]]:
        """Run the trainer function on ``data``."""
        return self.fn(data)


def trainer(
    name: str,
    *,
    task: Task = "classification",
    hyperparameters: Mapping[str, Value] | None = None,
    description: str | None = None,
) -> Callable[[F], F]:
    """Declare ``fn(data: TrainingData) -> (model, metrics)`` as the trainer ``name``.

    The model is a ``torch.nn.Module`` mapping float32 ``[N, k]`` to logits ``[N, C]``
    (classification) or to predictions ``[N]`` or ``[N, 1]`` (regression), or an
    :class:`OnnxModel`; ``metrics`` are training metrics (epochs run...).
    ``hyperparameters`` maps each accepted name to its default, whose type is the
    hyperparameter's (``None``: any value). ``description`` defaults to the first line of the
    function's docstring.
    """
    validate_name(name, what="trainer name")
    if task not in _TASKS:
        raise InvalidInput(f"trainer {name!r}: task must be one of {', '.join(_TASKS)}")
    defaults = dict(hyperparameters or {})
    for key, default in defaults.items():
        if not _is_value(default):
            raise InvalidInput(
                f"trainer {name!r}: the default of hyperparameter {key!r} is not a Value"
                f" (int, float, bool, str, list of floats or None): {default!r}"
            )

    def register(fn: F) -> F:
        text = description if description is not None else _first_line(fn.__doc__)
        entry = Trainer(name=name, task=task, defaults=defaults, description=text, fn=fn)
        setattr(fn, _MARK, entry)
        _DEFAULT.add(entry)
        return fn

    return register


class TrainerRegistry:
    """The trainers a process knows, by name.

    A new registry is empty; :meth:`default` is the process-wide one that :func:`trainer`
    registers into, with the built-in trainers.
    """

    def __init__(self) -> None:
        self._trainers: dict[str, Trainer] = {}

    @classmethod
    def default(cls) -> TrainerRegistry:
        """The process-wide registry: the built-in trainers and every decorated function."""
        _DEFAULT.add_builtin()
        return _DEFAULT

    def add(self, entry: Trainer) -> None:
        """Register ``entry``; another function under the same name raises ``InvalidInput``."""
        known = self._trainers.get(entry.name)
        # the same module:qualname again is a re-import (or a reload) of the same trainer
        if known is not None and known.origin != entry.origin:
            raise InvalidInput(
                f"trainer {entry.name!r} is already registered by {known.origin};"
                f" {entry.origin} cannot register the same name"
            )
        self._trainers[entry.name] = entry

    def add_builtin(self) -> None:
        """Register the trainers Quarry ships (this imports none of their libraries)."""
        for module in _BUILTIN_MODULES:
            self._collect(importlib.import_module(module))

    def discover(self, import_paths: Sequence[str]) -> None:
        """Import each dotted module path and register its trainers, then do the same for the
        ``quarry.trainers`` entry points of installed packages.

        An import that fails raises ``InvalidInput`` (no such module) or ``RuntimeError`` (the
        module raised), naming the path.
        """
        for path in import_paths:
            self._collect(_import(path))
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = point.load()
            except Exception as exc:
                raise RuntimeError(
                    f"cannot load the {ENTRY_POINT_GROUP} entry point {point.name!r}"
                    f" ({point.value}): {type(exc).__name__}: {exc}"
                ) from exc
            if isinstance(loaded, types.ModuleType):
                self._collect(loaded)
            elif isinstance(getattr(loaded, _MARK, None), Trainer):
                self.add(getattr(loaded, _MARK))
            else:
                raise RuntimeError(
                    f"the {ENTRY_POINT_GROUP} entry point {point.name!r} ({point.value}) names"
                    " neither a module nor a function decorated with @trainer"
                )

    def get(self, name: str) -> Trainer:
        """The trainer ``name``; ``InvalidInput`` listing the known ones if there is none."""
        entry = self._trainers.get(name)
        if entry is None:
            known = ", ".join(sorted(self._trainers)) or "none"
            raise InvalidInput(
                f"unknown trainer {name!r}; known trainers: {known}",
                details={"field": "trainer", "value": str(name)[:200]},
            )
        return entry

    def infos(self) -> list[TrainerInfo]:
        """Every trainer's description, sorted by name."""
        return [self._trainers[name].info() for name in sorted(self._trainers)]

    def check_hyperparameters(self, name: str, given: Mapping[str, Value]) -> dict[str, Value]:
        """``given`` checked against trainer ``name``'s hyperparameters, defaults filled in.

        ``InvalidInput`` for an unknown name (listing the accepted ones) or a value of the wrong
        type. An int is accepted (and converted) where a float is expected; a bool is never
        accepted as a number.
        """
        entry = self.get(name)
        checked: dict[str, Value] = dict(entry.defaults)
        for key, value in given.items():
            if key not in entry.defaults:
                accepted = ", ".join(sorted(entry.defaults)) or "none"
                raise InvalidInput(
                    f"unknown hyperparameter {key!r} for trainer {name!r}; accepted: {accepted}",
                    details={"field": f"hyperparameters.{key}"},
                )
            checked[key] = _coerce(key, value, entry.defaults[key])
        if entry.builtin:
            for key, value in checked.items():
                _check_range(key, value)
        return checked

    def _collect(self, module: types.ModuleType) -> None:
        for _, member in inspect.getmembers(module, callable):
            entry = getattr(member, _MARK, None)
            if isinstance(entry, Trainer):
                self.add(entry)


def import_torch() -> types.ModuleType:
    """``torch``, or a ``RuntimeError`` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError(
            "training needs torch, which is not installed: install quarryml[training]"
        ) from exc
    return torch


def pick_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a job's ``device`` (``auto``: CUDA when torch sees a GPU).

    ``InvalidInput`` for ``cuda`` on a host without one, or an unknown device; ``RuntimeError``
    saying how to install torch where it is missing.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise InvalidInput(f"unknown device {device!r}; expected auto, cpu or cuda")
    torch = import_torch()  # here for every device: a job calls this before it trains
    if device == "cpu":
        return "cpu"
    available = bool(torch.cuda.is_available())
    if device == "cuda" and not available:
        raise InvalidInput("device 'cuda' was asked for but torch sees no CUDA device here")
    return "cuda" if available else "cpu"


# --- helpers --------------------------------------------------------------------------------


def _import(path: str) -> types.ModuleType:
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (path == exc.name or path.startswith(exc.name + ".")):
            raise InvalidInput(f"cannot import trainer module {path!r}: {exc}") from exc
        raise RuntimeError(f"importing trainer module {path!r} failed: {exc}") from exc
    except Exception as exc:
        raise RuntimeError(
            f"importing trainer module {path!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


_POSITIVE = math.nextafter(0.0, 1.0)
"""The smallest float above 0: a lower bound that excludes 0."""
_RANGES: dict[str, tuple[float, float, str]] = {
    "epochs": (1, 1e9, "at least 1"),
    "batch_size": (1, 1e9, "at least 1"),
    "hidden": (1, 1e6, "at least 1"),
    "layers": (1, 1e3, "at least 1"),
    "patience": (0, 1e9, "0 (no early stopping) or more"),
    "lr": (1e-12, 1e3, "a positive number"),
    "weight_decay": (0, 1e3, "0 or more"),
    "dropout": (0, 0.999, "at least 0 and below 1"),
    "n_estimators": (1, 5000, "from 1 to 5000"),
    "max_depth": (0, 64, "from 0 (no limit) to 64"),
    "learning_rate": (_POSITIVE, 1, "above 0 and at most 1"),
    "num_leaves": (2, 131072, "from 2 to 131072"),
    "min_child_samples": (1, 1e9, "at least 1"),
    "min_child_weight": (0, 1e9, "0 or more"),
    "min_samples_leaf": (1, 1e9, "at least 1"),
    "subsample": (_POSITIVE, 1, "above 0 and at most 1"),
    "colsample_bytree": (_POSITIVE, 1, "above 0 and at most 1"),
    "reg_lambda": (0, 1e9, "0 or more"),
    "reg_alpha": (0, 1e9, "0 or more"),
    "early_stopping_rounds": (0, 1e6, "0 (no early stopping) or more"),
}
"""What the built-in trainers' numeric hyperparameters accept (checked at submission)."""
_CHOICES: dict[str, tuple[str, ...]] = {"max_features": ("sqrt", "log2", "all")}
"""What the built-in trainers' text hyperparameters accept."""


def _check_range(key: str, value: Value) -> None:
    choices = _CHOICES.get(key)
    if choices is not None and value not in choices:
        raise InvalidInput(
            f"hyperparameter {key!r} must be one of {', '.join(choices)}, got {value!r}",
            details={"field": f"hyperparameters.{key}"},
        )
    bounds = _RANGES.get(key)
    if bounds is None or not isinstance(value, int | float):
        return
    low, high, text = bounds
    if not low <= value <= high:
        raise InvalidInput(
            f"hyperparameter {key!r} must be {text}, got {value}",
            details={"field": f"hyperparameters.{key}"},
        )


def _first_line(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return text.splitlines()[0] if text else ""


def _is_value(value: object) -> TypeIs[Value]:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )


def _type_name(default: object) -> str:
    if default is None:
        return "any"
    if isinstance(default, list):
        return "list[float]"
    return _TYPE_NAMES[type(default)]


def _coerce(key: str, value: object, default: Value) -> Value:
    """``value`` as the type of ``default``, or ``InvalidInput``."""
    ok: Value | None = None
    if default is None:
        if _is_value(value):
            return value
    elif isinstance(default, bool):
        ok = value if isinstance(value, bool) else None
    elif isinstance(default, int):
        ok = value if isinstance(value, int) and not isinstance(value, bool) else None
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            ok = float(value)
    elif isinstance(default, str):
        ok = value if isinstance(value, str) else None
    elif _is_value(value) and isinstance(value, list):
        ok = [float(v) for v in value]
    if ok is not None:
        return ok
    got = "None" if value is None else type(value).__name__
    raise InvalidInput(
        f"hyperparameter {key!r} must be {_type_name(default)}, got {got}",
        details={"field": f"hyperparameters.{key}"},
    )


_DEFAULT = TrainerRegistry()
