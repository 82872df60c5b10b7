"""The training module's own settings: ``QUARRY_TRAINING_*``, or ``[training]`` in
``quarry.toml``. ``QUARRY_TRAINERS`` still names the trainer plug-in modules."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.kernel.module_settings import Alias
from contracts.common import MAX_TIME_LIMIT_S

__all__ = ["TrainingSettings"]


class TrainingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How training jobs prove they are alive, how long they may run, how many run at once,
    which plug-in trainers are imported, and where a dataset's source may be read."""

    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """QUARRY_TRAINING_HEARTBEAT_S: how often a running training job proves it is alive."""
    stale_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """QUARRY_TRAINING_STALE_S: a running job silent this long is re-run (its worker died)."""
    max_time_limit_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIME_LIMIT_S)] = MAX_TIME_LIMIT_S
    """QUARRY_TRAINING_MAX_TIME_LIMIT_S: the longest time limit a training job may ask for
    (default and most: 30 days, the contract's ceiling)."""
    processes: Annotated[int, msgspec.Meta(ge=1)] = 1
    """QUARRY_TRAINING_PROCESSES: training jobs a process runs at once, each in a child process."""
    trainers: Annotated[tuple[str, ...], Alias("QUARRY_TRAINERS")] = ()
    """QUARRY_TRAINING_TRAINERS (or QUARRY_TRAINERS): comma-separated modules to import for
    ``@trainer`` plug-ins."""
    source_roots: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_ROOTS")] = ()
    """QUARRY_TRAINING_SOURCE_ROOTS (or QUARRY_SOURCE_ROOTS, which feature views read too):
    comma-separated folders a dataset's Parquet or CSV ``source`` may read from (default: the
    data directory only; ``s3://`` roots are feature views' alone); a relative path is taken
    from the first one."""
    source_databases: Annotated[tuple[str, ...], Alias("QUARRY_SOURCE_DATABASES")] = ()
    """QUARRY_TRAINING_SOURCE_DATABASES (or QUARRY_SOURCE_DATABASES): comma-separated
    ``postgresql://`` URLs, each optionally ``name=URL``, a dataset's ``source`` may read; none
    by default."""
