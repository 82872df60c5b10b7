"""A view's source: where it may be read from, what it holds, and its rows in chunks.

Files (Parquet, CSV) are read only under the configured source roots: a path is resolved
(``..`` and symlinks followed) before it is compared with them, so neither a relative trick nor
a link out of a root reaches anything else; an ``s3://`` URL only under an ``s3://`` root
(:mod:`.source_s3`). Databases are read only when configured, by name or by their exact URL.
Reading is blocking: callers run it in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.kernel import sources
from app.kernel.settings import ConfigError
from app.kernel.sources import Chunk, SourceReader, import_arrow, shown_text
from app.modules.features import source_s3
from app.modules.features.source_rows import column_dtypes, needed_columns
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource, PutFeatureView

if TYPE_CHECKING:
    pass

__all__ = ["Chunk", "SourcePolicy", "SourceReader", "check_source", "import_arrow", "open_source"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True)
class SourcePolicy(sources.SourcePolicy):
    """The kernel's policy (file ``roots``, ``databases``: name -> URL) and ``buckets``, the
    ``s3://`` roots (as ``bucket/prefix``)."""

    buckets: tuple[str, ...] = ()

    @classmethod
    def of(cls, roots: Sequence[str], databases: Sequence[str], data_dir: Path) -> SourcePolicy:
        """The policy of the module's settings (no local roots: the data directory alone;
        ``s3://`` roots only as given)."""
        local = sources.SourcePolicy.of(
            [r for r in roots if not source_s3.is_s3(r)], databases, data_dir
        )
        try:
            buckets = tuple(
                source_s3.parse_url(r, field="source_roots") for r in roots if source_s3.is_s3(r)
            )
        except InvalidInput as exc:
            raise ConfigError(f"QUARRY_SOURCE_ROOTS: {exc.message}") from None
        return cls(roots=local.roots, databases=local.databases, buckets=buckets)

    def path(self, text: str, *, field: str = "source.path") -> Path:
        """``text`` resolved, if it lies under a root; ``InvalidInput`` otherwise."""
        if "://" in text:
            raise InvalidInput(
                f"source path {shown_text(text)!r}: only local paths under the source roots and"
                " s3:// URLs under its s3:// roots are read",
                details={"field": field},
            )
        return super().path(text, field=field)

    def s3_path(self, text: str, *, field: str = "source.path") -> str:
        """The ``s3://`` URL ``text`` as ``bucket/key``, if it lies under an ``s3://`` root;
        ``InvalidInput`` otherwise."""
        path = source_s3.parse_url(text, field=field)
        if not any(source_s3.under(path, root) for root in self.buckets):
            raise InvalidInput(
                f"{shown_text(text)!r} is outside the s3:// source roots (the features module's"
                " source_roots setting, QUARRY_SOURCE_ROOTS, may list s3://bucket/prefix"
                " entries; none by default)",
                details={"field": field},
            )
        return path


def check_source(view: PutFeatureView, policy: SourcePolicy) -> None:
    """Reject a source that may not be read, cannot be read, or lacks a column the view reads."""
    source = view.source
    if source is None:
        return
    needed_columns(view.entities, view.features, source)  # unknown names in the mappings
    reader = open_source(view.entities, view.features, source, policy)
    try:
        reader.check()
    finally:
        reader.close()


def open_source(
    entities: Sequence[str],
    features: Sequence[Feature],
    source: FeatureSource,
    policy: SourcePolicy,
    *,
    every_column: bool = False,
) -> SourceReader:
    """A reader of ``source``; ``InvalidInput`` when it may not be read or is not there.
    ``every_column``: chunks hold every column, not only those the view reads."""
    if source.format == "postgresql":
        from app.modules.features.source_database import DatabaseReader

        if source.path is not None or source.database is None:
            raise InvalidInput(
                "a postgresql source names a database (and a table or a query), not a path",
                details={"field": "source.database"},
            )
        if (source.table is None) == (source.query is None):
            raise InvalidInput(
                "a postgresql source needs one of table or query", details={"field": "source"}
            )
        if source.table is not None and not all(
            _IDENTIFIER.match(part) for part in source.table.split(".", 1)
        ):
            raise InvalidInput(
                f"table {source.table!r} is not a name or schema.name",
                details={"field": "source.table"},
            )
        url = policy.database(source.database)
        return DatabaseReader(entities, features, source, url, every_column=every_column)
    if source.path is None or source.database or source.table or source.query:
        raise InvalidInput(
            f"a {source.format} source names a path (no database, table or query)",
            details={"field": "source.path"},
        )
    if source_s3.is_s3(source.path):
        from app.modules.features.source_s3_reader import S3Reader

        prefix = policy.s3_path(source.path)
        arrow = import_arrow()
        return S3Reader(
            entities, features, source, prefix, arrow=arrow, chunk=Chunk, every_column=every_column
        )
    return FileReader(entities, features, source, policy, every_column=every_column)


class FileReader(sources.FileReader):
    """Parquet or CSV files: one file, or every file of the format under a directory (the
    kernel's reader on the columns a view reads)."""

    def __init__(
        self,
        entities: Sequence[str],
        features: Sequence[Feature],
        source: FeatureSource,
        policy: SourcePolicy,
        *,
        every_column: bool = False,
    ) -> None:
        needed_columns(entities, features, source)  # unknown names in the mappings
        super().__init__(
            source.path or "",
            "csv" if source.format == "csv" else "parquet",
            policy,
            column_dtypes(entities, features, source),
            every_column=every_column,
        )
