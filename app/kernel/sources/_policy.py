"""Where sources may be read, and what a reader hands back."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from contracts.common import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Chunk", "SourcePolicy", "SourceReader", "import_arrow", "redacted", "shown_text"]


def import_arrow() -> Any:
    """pyarrow, or an error saying how to install it."""
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - installed with the sources extra
        raise InvalidInput(
            "reading sources needs pyarrow: pip install 'quarryml[sources]'"
        ) from None
    return pyarrow


@dataclass(frozen=True)
class SourcePolicy:
    """Where sources may be read: file ``roots`` (resolved) and ``databases`` (name -> URL).

    A path is resolved (``..`` and symlinks followed) before it is compared with the roots, so
    neither a relative trick nor a link out of a root reaches anything else; a database is read
    only when configured, by name or by its exact URL.
    """

    roots: tuple[Path, ...]
    databases: Mapping[str, str]

    @classmethod
    def of(cls, roots: Sequence[str], databases: Sequence[str], data_dir: Path) -> SourcePolicy:
        """The policy of a module's settings (no roots: the data directory alone)."""
        folders = tuple(Path(r).expanduser().resolve() for r in roots) or (data_dir.resolve(),)
        named: dict[str, str] = {}
        for entry in databases:
            name, sep, url = entry.partition("=")
            if sep and "://" not in name:  # name=URL (a URL's own "=" come after its "://")
                named[name.strip()] = named[url.strip()] = url.strip()
            else:
                named[entry] = entry
        return cls(roots=folders, databases=named)

    def path(self, text: str, *, field: str = "source.path") -> Path:
        """``text`` resolved, if it lies under a root; ``InvalidInput`` naming ``field``
        otherwise. The path need not exist."""
        if "://" in text:
            raise InvalidInput(
                f"path {shown_text(text)!r}: only local paths under the source roots are read",
                details={"field": field},
            )
        try:
            given = Path(text).expanduser()
            found = (given if given.is_absolute() else self.roots[0] / given).resolve()
        except (ValueError, OSError, RuntimeError) as exc:  # NUL bytes, loops, too long
            raise unusable(text, exc, field) from None
        if not any(found.is_relative_to(root) for root in self.roots):
            raise InvalidInput(
                f"path {shown_text(text)!r} is outside the source roots (QUARRY_SOURCE_ROOTS)",
                details={"field": field},
            )
        return found

    def shown(self, path: Path) -> str:
        """``path`` as errors name it: relative to its root."""
        for root in self.roots:
            if path.is_relative_to(root):
                return str(path.relative_to(root))
        return path.name

    def database(self, name: str, *, field: str = "source.database") -> str:
        """The URL of a configured database; ``InvalidInput`` for any other."""
        url = self.databases.get(name)
        if url is None:
            raise InvalidInput(
                f"source database {redacted(name)!r} is not configured (QUARRY_SOURCE_DATABASES)",
                details={"field": field},
            )
        return url


def shown_text(text: str) -> str:
    """``text`` shortened for a message."""
    return text if len(text) <= 120 else text[:117] + "..."


def unusable(text: str, exc: Exception, field: str) -> InvalidInput:
    """The error for a path that cannot be a path (a NUL byte, a loop, a name too long)."""
    return InvalidInput(
        f"path {shown_text(text)!r} is not a usable path: {type(exc).__name__}",
        details={"field": field},
    )


def redacted(text: str) -> str:
    """A URL without its password."""
    return re.sub(r"//[^@/]*@", "//***@", text)


@dataclass(frozen=True)
class Chunk:
    """Rows ``first`` to ``first + table.num_rows - 1`` of ``where`` (a file, a table)."""

    where: str
    first: int
    table: pa.Table


class SourceReader(Protocol):
    """A source opened for one run (or for a check at declaration)."""

    def check(self) -> None:
        """The columns read are there, of usable types; ``InvalidInput`` if not."""
        ...

    def total(self, start_us: int | None, end_us: int) -> int | None:
        """About how many rows a run will read (``None`` when unknown)."""
        ...

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        """The rows in chunks of at most ``size`` (a file's may hold rows outside the window)."""
        ...

    def close(self) -> None:
        """Let go of connections."""
        ...
