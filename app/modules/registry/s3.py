"""Artifact blobs in an S3-compatible bucket (``QUARRY_ARTIFACTS_URL=s3://bucket/prefix``).

Objects live at ``<prefix>/<sha256[:2]>/<sha256>``, so several processes (an API host, GPU
inference hosts, workers) share one store. The connection comes from the standard AWS variables,
read when the store is opened:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: the endpoint of an S3-compatible server
  (MinIO, Ceph, moto ...); unset means AWS itself.
- ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``): credentials;
  unset means boto3's usual chain (shared config files, instance or pod roles).
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the bucket's region.

S3 writes are atomic, so a blob is whole or absent as with the local store; big artifacts go up
in parts, and parts of uploads abandoned longer than the sweep's grace period are aborted. Every
method blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from app.kernel import s3 as aws
from app.kernel.settings import ConfigError

__all__ = ["S3ArtifactStore"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_PART_BYTES = 64 << 20
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_REFUSED = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
)


class S3ArtifactStore:
    """Blobs as objects under a prefix of one bucket.

    ``client`` replaces the boto3 client built from the environment; artifacts of
    ``part_bytes`` or more go up as multipart uploads in parts of that size.
    """

    def __init__(
        self, url: str, *, client: Any | None = None, part_bytes: int = _PART_BYTES
    ) -> None:
        self.url = url
        self.bucket, self.prefix = _parse(url)
        self.endpoint = aws.endpoint()
        self._client = client or _client(self.endpoint)
        self._transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes
        )

    def key(self, digest: str) -> str:
        """The object key of ``digest`` (``ValueError`` for anything but a sha256 hex)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a lowercase sha256 hex digest: {digest!r}")
        return f"{self.prefix}{digest[:2]}/{digest}"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming QUARRY_ARTIFACTS_URL unless the bucket is usable."""
        where = f"QUARRY_ARTIFACTS_URL={self.url!r} (endpoint {self.endpoint or 'AWS'})"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ConfigError(
                f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING or code == "NoSuchBucket":
                raise ConfigError(f"{where}: bucket {self.bucket!r} does not exist") from None
            if code in _REFUSED:
                raise ConfigError(
                    f"{where}: access to bucket {self.bucket!r} was refused; check"
                    " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            raise ConfigError(f"{where}: the bucket cannot be used: {exc}") from None
        except BotoCoreError as exc:
            raise ConfigError(f"{where}: the S3 endpoint cannot be reached: {exc}") from None

    def put(self, digest: str, data: bytes) -> bool:
        key = self.key(digest)
        if self._size(key) == len(data):
            # Refresh LastModified (a server-side copy onto itself) so a concurrent sweep
            # treats the blob as new, as the local store's touch does.
            self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
            )
            return False
        self._client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self._transfer)
        return True

    def exists(self, digest: str) -> bool:
        return self._size(self.key(digest)) is not None

    def open(self, digest: str) -> BinaryIO:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(digest) from None
            raise
        return cast(BinaryIO, answer["Body"])  # a streaming body, read in chunks

    def delete(self, digest: str) -> bool:
        key = self.key(digest)
        if self._size(key) is None:
            return False
        self._client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def blobs(self) -> Iterator[tuple[str, float]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for entry in page.get("Contents", ()):
                folder, _, name = entry["Key"][len(self.prefix) :].partition("/")
                if _DIGEST.fullmatch(name) and name[:2] == folder:
                    yield name, entry["LastModified"].timestamp()

    def sweep_temporary(self, older_than_s: float) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than_s`` ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        aborted = 0
        for page in pages:
            for upload in page.get("Uploads", ()):
                if upload["Initiated"] < cutoff:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def _size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return int(head["ContentLength"])


def _parse(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); the prefix may be empty."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(
            f"QUARRY_ARTIFACTS_URL={url!r} names no bucket: expected s3://bucket/prefix"
        )
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _client(endpoint: str | None) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=aws.region())


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
