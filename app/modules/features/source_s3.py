"""Sources and historical outputs in an S3-compatible bucket (``s3://bucket/key``).

The connection comes from the same standard AWS variables as the artifact store's, read when a
file system is opened: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible
server; unset: AWS itself), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (unset: the usual
chain of config files and instance roles) and ``AWS_REGION`` or ``AWS_DEFAULT_REGION``.

A URL is only ever read or written under an ``s3://`` entry of the source roots, compared key
segment by key segment; ``.``, ``..`` and empty segments are refused, so no spelling of a key
reaches outside its root. Every function blocks: callers run them in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from app.kernel.s3 import arrow_filesystem
from contracts.common import InvalidInput

__all__ = ["S3_SCHEME", "filesystem", "is_s3", "list_files", "parse_url", "reason", "under"]

S3_SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def is_s3(text: str) -> bool:
    """Whether ``text`` is an ``s3://`` URL."""
    return text.startswith(S3_SCHEME)


def parse_url(text: str, *, field: str) -> str:
    """``s3://bucket/key`` as pyarrow names it (``bucket/key``, no trailing slash);
    ``InvalidInput`` for a URL that is not a plain bucket and key."""
    rest = text[len(S3_SCHEME) :].rstrip("/")
    bucket, _, key = rest.partition("/")
    segments = key.split("/") if key else []
    if (
        not _BUCKET.match(bucket)
        or any(s in ("", ".", "..") for s in segments)
        or any(c in text for c in "\\\0?#")
    ):
        raise InvalidInput(
            f"{_shown(text)!r} is not an s3://bucket/key URL (no '.', '..' or empty parts)",
            details={"field": field},
        )
    return rest


def under(path: str, root: str) -> bool:
    """Whether the parsed ``path`` is ``root`` or inside it (segment by segment)."""
    return path == root or path.startswith(root + "/")


def filesystem() -> Any:
    """A pyarrow ``S3FileSystem`` on the AWS variables (see the module's docstring)."""
    return arrow_filesystem()


def list_files(s3: Any, path: str, suffixes: Sequence[str], what: str) -> list[str]:
    """The object ``path``, or every object under it whose name ends with one of
    ``suffixes``, sorted; ``InvalidInput`` naming the URL when there is none or the bucket
    cannot be read."""
    from pyarrow import fs

    url = S3_SCHEME + path
    try:
        info = s3.get_file_info(path)
        if info.type == fs.FileType.File:
            return [path]
        if info.type == fs.FileType.NotFound:
            bucket = path.partition("/")[0]
            if s3.get_file_info(bucket).type == fs.FileType.NotFound:
                raise InvalidInput(
                    f"source {url}: bucket {bucket!r} does not exist",
                    details={"field": "source.path"},
                )
            raise InvalidInput(
                f"source {url} does not exist (no such object or folder)",
                details={"field": "source.path"},
            )
        found = s3.get_file_info(fs.FileSelector(path, recursive=True))
    except OSError as exc:
        raise InvalidInput(
            f"source {url} cannot be read: {reason(exc)}", details={"field": "source.path"}
        ) from None
    files = sorted(
        f.path
        for f in found
        if f.type == fs.FileType.File and f.path.lower().endswith(tuple(suffixes))
    )
    if not files:
        raise InvalidInput(
            f"source folder {url} holds no {what} files", details={"field": "source.path"}
        )
    return files


def reason(exc: BaseException) -> str:
    """An S3 error's first line, without the request id."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."
