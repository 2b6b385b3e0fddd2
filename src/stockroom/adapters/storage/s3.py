"""ImageStore on S3 or an S3-compatible service (MinIO, R2, moto) through boto3."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from stockroom.domain.errors import StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType

CACHE_CONTROL = "public, max-age=31536000, immutable"
"""Keys are content-addressed, so an object never changes and may be cached forever."""

_DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404"})
_QUERY_PARAMS = frozenset({"endpoint_url", "region", "public_base_url"})


@contextmanager
def _translate_s3_errors() -> Iterator[None]:
    """Re-raise every botocore failure (network, credentials, S3 error) as StorageUnavailable."""
    try:
        yield
    except ClientError as exc:
        raise StorageUnavailable(f"S3 refused the request: {_error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 could not be reached: {exc}") from exc


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ImageStore:
    """Objects live at `<prefix>/<key>` in one bucket; the sync client runs in worker threads."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "",
        public_base_url: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._region = region
        if public_base_url:
            self._url_base = public_base_url.rstrip("/")
        elif endpoint_url:
            self._url_base = f"{endpoint_url.rstrip('/')}/{bucket}"
        else:
            self._url_base = f"https://{bucket}.s3.amazonaws.com"

    @classmethod
    def from_url(
        cls,
        url: str,
        public_base_url: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_pool_connections: int = 10,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> S3ImageStore:
        """Build from `s3://bucket[/prefix]?endpoint_url=..&region=..&public_base_url=..`.

        The app's `public_base_url` is ignored: S3 objects are not served by the app; pass a
        CDN base in the URL instead. Credentials default to the standard AWS chain.
        """
        del public_base_url
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"S3 storage URL must look like s3://bucket[/prefix]: {url!r}")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        if unknown := sorted(set(query) - _QUERY_PARAMS):
            raise ValueError(f"unknown S3 storage URL parameters {unknown}: {url!r}")
        endpoint_url = query.get("endpoint_url")
        region = query.get("region")
        config = Config(
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # S3-compatible services want path-style addressing and may reject the
            # CRC checksums that botocore >= 1.36 sends by default.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        client = session.client("s3", endpoint_url=endpoint_url, config=config)
        return cls(
            client,
            parts.netloc,
            prefix=parts.path,
            public_base_url=query.get("public_base_url"),
            endpoint_url=endpoint_url,
            region=region,
        )

    def _object_key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        with _translate_s3_errors():
            await asyncio.to_thread(
                self._client.put_object,
                Bucket=self._bucket,
                Key=self._object_key(key),
                Body=data,
                ContentType=content_type,
                CacheControl=CACHE_CONTROL,
            )
        return self.url_for(key)

    async def get(self, key: str) -> bytes:
        with _translate_s3_errors():
            return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                raise KeyError(key) from exc
            raise
        with response["Body"] as body:
            return body.read()

    async def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with _translate_s3_errors():
                response = await asyncio.to_thread(
                    self._client.delete_objects,
                    Bucket=self._bucket,
                    Delete={
                        "Objects": [{"Key": self._object_key(key)} for key in batch],
                        "Quiet": True,
                    },
                )
            # DeleteObjects answers 200 even when some keys failed (absent keys never do).
            if errors := response.get("Errors"):
                codes = sorted({str(error.get("Code")) for error in errors})
                raise StorageUnavailable(f"S3 could not delete {len(errors)} objects: {codes}")

    def url_for(self, key: str) -> str:
        return f"{self._url_base}/{quote(self._object_key(key), safe='/')}"

    async def size(self, key: str) -> int | None:
        with _translate_s3_errors():
            return await asyncio.to_thread(self._size, key)

    def _size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return None
            raise
        return int(head["ContentLength"])

    def presigned_put(self, key: str, content_type: str, expires_in: int) -> str:
        # Content-Type is signed: the client must send the type it declared.
        return self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self._bucket,
                "Key": self._object_key(key),
                "ContentType": content_type,
            },
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )

    async def ping(self) -> None:
        with _translate_s3_errors():
            await asyncio.to_thread(self._client.head_bucket, Bucket=self._bucket)

    async def create_bucket_if_missing(self) -> None:
        """Create the bucket unless it exists; for tests and `stockroom migrate`."""
        with _translate_s3_errors():
            await asyncio.to_thread(self._create_bucket_if_missing)

    def _create_bucket_if_missing(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING_BUCKET_CODES:
                raise
        else:
            return
        try:
            if self._region and self._region != "us-east-1":
                # A cast, not a check: S3-compatible services accept regions AWS does not list.
                region = cast("BucketLocationConstraintType", self._region)
                self._client.create_bucket(
                    Bucket=self._bucket, CreateBucketConfiguration={"LocationConstraint": region}
                )
            else:
                self._client.create_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":  # lost a race with another migrate
                raise

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
