"""A training process: ``python -m app.modules.training.child --job ID --threads N``.

Started by a job's run (``process.py``), one per job, so that fitting, the ONNX export (not safe
on two threads of one process), the parity check and the evaluation never run in the serving
process: a crash or an out-of-memory kill ends this process and fails (or retries) that job
only. It lowers its priority, limits torch and ONNX Runtime to ``N`` threads, imports torch
while the run prepares the dataset (not with ``--no-torch``: the built-in tree ensembles do
without it, and their jobs then run on the CPU), then reads one
:class:`~app.modules.training.work.Work` on stdin and answers on stdout (``work.py``). Anything
printed goes to stderr, which the run copies to its log. It exits when its stdin closes: the
run gave up, or its process died.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from app.modules.training.dataset import JobFailed
from app.modules.training.work import Done, Epoch, Failed, Work, read_work, write
from contracts.common import QuarryError

if TYPE_CHECKING:
    from app.modules.training.trainers import OnnxModel, Trainer

__all__ = ["NICENESS", "main"]

NICENESS = 19
"""How much a training process lowers its priority: serving in the parent wins the CPU."""

_log = logging.getLogger("quarry.training.child")
_EXPECTED = (JobFailed, QuarryError)
"""Failures that are the job's own (bad data, a bad device): reported without a traceback."""

Report = Callable[[int, int, dict[str, float]], None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job's work; the exit status is 0 whenever an answer was sent."""
    parser = argparse.ArgumentParser(prog="python -m app.modules.training.child")
    parser.add_argument("--job", default="", help="the job's id (to tell processes apart)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--no-torch", action="store_true", help="the trainer does without torch")
    args = parser.parse_args(argv)
    threads = max(1, args.threads)
    answers = _take_stdout()
    faulthandler.enable()  # a native crash leaves its Python stack in the log
    # warnings and errors only: the exporter's passes log every step at INFO
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    _lower_priority()
    try:
        if not args.no_torch:
            _import_torch(threads)
    except Exception as exc:
        write(answers, Failed(reason=_reason(exc)))
        return 0
    work = read_work(sys.stdin.buffer)
    if work is None:  # the run gave up before sending anything
        return 0
    _exit_with_stdin(sys.stdin.buffer)
    try:
        done = run(
            work, threads, lambda e, n, m: write(answers, Epoch(epoch=e, epochs=n, metrics=m))
        )
    except Exception as exc:
        if not isinstance(exc, _EXPECTED):
            _log.exception("training job %s failed", work.job_id)
        write(answers, Failed(reason=_reason(exc)))
    else:
        write(answers, done)
    return 0


def run(work: Work, threads: int, report: Report) -> Done:
    """Train, export, check parity, evaluate and profile, as the job asks."""
    from app.modules.training.evaluation import metrics
    from app.modules.training.export import (
        check_native_parity,
        check_parity,
        export_onnx,
        onnx_session,
        run_onnx,
    )
    from app.modules.training.profile import reference_profile
    from app.modules.training.trainers import OnnxModel, TrainingData, pick_device

    trainer = _find_trainer(work)
    x_train, y_train = _array(work.x_train.to_numpy()), _array(work.y_train.to_numpy())
    x_valid, y_valid = _array(work.x_valid.to_numpy()), _array(work.y_valid.to_numpy())
    model, train_metrics = trainer.fn(
        TrainingData(
            x_train=x_train,
            y_train=y_train,
            x_valid=x_valid,
            y_valid=y_valid,
            columns=work.columns,
            classes=work.classes,
            hyperparameters=work.hyperparameters,
            device=pick_device(work.device) if trainer.needs_torch else _cpu(trainer, work),
            seed=work.seed,
            report=lambda e, n, m: report(e, n, {k: float(v) for k, v in m.items()}),
            threads=threads,
        )
    )
    rows = x_valid[: work.parity_rows]
    lineage: dict[str, str] = {}
    if isinstance(model, OnnxModel):  # exported by the trainer: checked against its library
        onnx = model.onnx
        session = onnx_session(onnx, threads=threads)  # loaded once: a forest's can be large
        parity = check_native_parity(session, model.predict, rows, task=work.task)
        lineage = _lineage(model)
    else:
        module = model.cpu().eval()
        onnx = export_onnx(module, len(work.columns), task=work.task)
        session = onnx_session(onnx, threads=threads)
        parity = check_parity(session, module, rows, task=work.task)
    scores = metrics(work.task, y_valid, run_onnx(session, x_valid))
    train_outputs = run_onnx(session, x_train)
    profile = reference_profile(
        work.columns, x_train, train_outputs, task=work.task, seed=work.seed
    )
    return Done(
        onnx=onnx,
        parity=parity,
        train_metrics={k: float(v) for k, v in train_metrics.items()},
        scores=scores,
        profile=profile,
        lineage=lineage,
    )


def _lineage(model: OnnxModel) -> dict[str, str]:
    """What the version's lineage records of a model its trainer exported."""
    found = dict(model.lineage)
    if model.feature_importances is not None:
        importances = {k: float(v) for k, v in model.feature_importances.items()}
        found["feature_importances"] = json.dumps(importances)
    return found


def _cpu(trainer: Trainer, work: Work) -> str:
    """The device of a trainer that does without torch: the CPU, unless CUDA was demanded."""
    if work.device == "cuda":
        raise JobFailed(
            f"trainer {trainer.name!r} runs on the CPU only: ask for device cpu or auto"
        )
    return "cpu"


def _find_trainer(work: Work) -> Trainer:
    from app.modules.training.trainers import TrainerRegistry

    sys.path.extend(p for p in work.sys_path if p not in sys.path)
    registry = TrainerRegistry.default()
    registry.discover(work.trainer_modules)
    try:
        return registry.get(work.trainer)
    except QuarryError:
        raise JobFailed(
            f"trainer {work.trainer!r} ({work.trainer_origin}) is not found in the training"
            f" process, which imports only {', '.join(work.trainer_modules) or 'the built-in'}"
            " trainer modules: define it in a module named in QUARRY_TRAINERS (or trainers=...)"
        ) from None


def _take_stdout() -> BinaryIO:
    """The answer channel (the original stdout); fd 1 and ``sys.stdout`` then go to stderr."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return answers


def _lower_priority() -> None:
    """Nice 19, before torch starts its threads (which inherit it)."""
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):  # not on this platform, or not allowed
        _log.warning("cannot lower the training process's priority")


def _import_torch(threads: int) -> None:
    from app.modules.training.trainers import import_torch

    torch = import_torch()
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _exit_with_stdin(stdin: BinaryIO) -> None:
    """Exit at once when stdin closes: the run was cancelled, timed out, or its process died."""

    def watch() -> None:
        while stdin.read(1):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _array(values: np.ndarray) -> np.ndarray:
    return np.array(values)  # a writable copy: the decoded buffers are read-only


def _reason(exc: Exception) -> str:
    if isinstance(exc, QuarryError):
        return exc.message
    if isinstance(exc, JobFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
