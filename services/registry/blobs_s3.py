"""Blobs in an S3-compatible object store: `<prefix>/sha256/ab/<hex>` in one bucket.

boto3 is synchronous; the registry calls every method here through
`asyncio.to_thread`, as it does the filesystem store. Endpoint, credentials,
region and CA bundle come from the standard AWS environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_CA_BUNDLE), which
botocore reads itself (AWS_REGION excepted: read here); `endpoint_url` overrides
the endpoint.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
)

from services.common.errors import Unavailable
from services.common.settings import MIB
from services.registry.blobs import LocalStaging, StoredBlob
from services.registry.names import SHA256_HEX

R = TypeVar("R")
# Parts of a multipart upload: memory per upload is about part size x concurrency.
PART_BYTES = 8 * MIB
_CONCURRENCY = 4
_MISSING = {"404", "NoSuchKey", "NotFound"}
_UNAVAILABLE = "the object store is unreachable or failing; retry"


def parse_blob_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket[/prefix]`; ValueError naming what is expected."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"blob_url: expected s3://bucket[/prefix] or empty, got {url!r}")
    return parts.netloc, parts.path.strip("/")


class _Body(io.RawIOBase):
    """GetObject's streaming body as a raw binary file: read(n) reads at most n bytes."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(LocalStaging):
    """Blobs in `bucket` under `prefix`; uploads staged under the local `staging` directory."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        staging: Path,
        *,
        endpoint_url: str | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        super().__init__(staging)
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/sha256/" if prefix.strip("/") else "sha256/"
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        config = Config(
            retries={"mode": "standard", "max_attempts": 4},
            # An open download holds a connection per file until it is read to the end.
            max_pool_connections=64,
            # S3-compatible stores (SeaweedFS, MinIO, Ceph) behind one host name
            # rarely serve virtual-hosted buckets; AWS itself serves both.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
        )
        # botocore itself reads only AWS_DEFAULT_REGION; the other SDKs (and the chart) use
        # AWS_REGION. None leaves the choice to botocore (AWS_DEFAULT_REGION, ~/.aws).
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=os.environ.get("AWS_REGION") or None,
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=part_bytes,
            multipart_chunksize=part_bytes,
            max_concurrency=_CONCURRENCY,
        )

    @property
    def region(self) -> str | None:
        """The region requests are signed for."""
        region: str | None = self._client.meta.region_name
        return region

    @property
    def where(self) -> str:
        """The bucket and endpoint, for messages (no credentials)."""
        return f"bucket {self.bucket!r} at {self.endpoint_url or 'the AWS default endpoint'}"

    def check(self) -> None:
        """ValueError naming bucket and endpoint if the bucket cannot be reached."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = "does not exist" if code in _MISSING else f"refused access ({code})"
            raise ValueError(f"object store: {self.where} {why}") from None
        except BotoCoreError as exc:
            raise ValueError(f"object store: cannot reach {self.where}: {exc}") from None

    def key(self, sha256: str) -> str:
        """The object key of blob `sha256`."""
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def put(self, source: Path, sha256: str) -> None:
        if self.exists(sha256):
            return
        # Managed multipart upload: parts are read from the file as they are sent, and
        # the object appears at its key only when the upload completes.
        self._call(
            self._client.upload_file,
            str(source),
            self.bucket,
            self.key(sha256),
            Config=self._transfer,
        )

    def exists(self, sha256: str) -> bool:
        try:
            self._call(self._client.head_object, Bucket=self.bucket, Key=self.key(sha256))
        except FileNotFoundError:
            return False
        return True

    def open(self, sha256: str) -> BinaryIO:
        reply = self._call(self._client.get_object, Bucket=self.bucket, Key=self.key(sha256))
        return io.BufferedReader(_Body(reply["Body"]), buffer_size=1 * MIB)

    def delete(self, sha256: str) -> None:
        self._call(self._client.delete_object, Bucket=self.bucket, Key=self.key(sha256))

    def stored(self) -> list[StoredBlob]:
        return [
            StoredBlob(name, item["LastModified"].timestamp())
            for item in self._pages("list_objects_v2", "Contents")
            if SHA256_HEX.fullmatch(name := item["Key"].rsplit("/", 1)[-1])
        ]

    def incomplete(self) -> list[tuple[str, str, float]]:
        """(key, upload id, initiated) of every multipart upload begun and not finished."""
        return [
            (item["Key"], item["UploadId"], item["Initiated"].timestamp())
            for item in self._pages("list_multipart_uploads", "Uploads")
        ]

    def abort_incomplete(self, before: float) -> list[str]:
        aborted = []
        for key, upload_id, initiated in self.incomplete():
            if initiated < before:
                self._call(
                    self._client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
                aborted.append(key)
        return aborted

    def list(self) -> list[str]:
        return sorted(blob.sha256 for blob in self.stored())

    def _pages(self, operation: str, field: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator(operation)
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                yield from page.get(field) or []
        except (BotoCoreError, ClientError) as exc:
            raise Unavailable(_UNAVAILABLE) from exc

    def _call(self, method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Call boto3: a missing object is FileNotFoundError, any other failure Unavailable."""
        try:
            return method(*args, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING:
                raise FileNotFoundError(kwargs.get("Key", "")) from None
            raise Unavailable(_UNAVAILABLE) from exc
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: a failed managed upload
            raise Unavailable(_UNAVAILABLE) from exc
