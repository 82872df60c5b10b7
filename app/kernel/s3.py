"""Where S3 is: the standard AWS variables every S3 reader and writer opens its connection on.

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: the endpoint of an S3-compatible server
  (MinIO, Ceph, moto ...); unset means AWS itself.
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the bucket's region.

Credentials (``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``) are left to boto3 and pyarrow,
which read them, or their usual chain of config files and instance roles, themselves. The
variables are read on every call, so a connection opened later sees a changed environment.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["arrow_filesystem", "endpoint", "region"]


def endpoint() -> str | None:
    """The S3-compatible server's URL, or ``None`` for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str | None:
    """The bucket's region, or ``None`` to leave it to the client."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def arrow_filesystem() -> Any:
    """A pyarrow ``S3FileSystem`` on the endpoint and region above."""
    from pyarrow import fs

    options: dict[str, Any] = {}
    url = endpoint()
    if url:
        options["endpoint_override"] = url
    name = region()
    if name:
        options["region"] = name
    return fs.S3FileSystem(**options)
