"""``S3ColdStore``: an ``IColdStore`` in an S3 bucket (boto3 in the reactor's thread pool,
Deferreds out). Credentials come from the usual AWS chain (environment, config files,
instance roles); ``endpoint_url`` points it at any S3-compatible service.

May import: Twisted, zope.interface, boto3, botocore.
"""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from zope.interface import implementer

from ursula.cold.interfaces import ChunkMissing, ColdError, IColdStore
from ursula.cold.threaded import ThreadedStore


@implementer(IColdStore)
class S3ColdStore(ThreadedStore):
    def __init__(self, reactor, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, pool=None, client=None):
        if not bucket:
            raise ValueError("[cold] bucket: required with backend = s3")
        self.reactor = reactor
        self.bucket = bucket
        self.prefix = prefix
        self.pool = pool
        self.client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=30))

    # -- in the thread pool -------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except (BotoCoreError, ClientError) as error:
            raise ColdError(f"s3 put {self.prefix}{key}: {error}") from None

    def _get(self, key: str, start: int, end: int | None) -> bytes:
        kwargs = {}
        if start or end is not None:
            last = "" if end is None else str(end - 1)
            kwargs["Range"] = f"bytes={start}-{last}"
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kwargs)
            return answer["Body"].read()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise ChunkMissing(f"cold chunk {self.prefix}{key}: no such object") from None
            raise ColdError(f"s3 get {self.prefix}{key}: {error}") from None
        except BotoCoreError as error:
            raise ColdError(f"s3 get {self.prefix}{key}: {error}") from None

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as error:
            raise ColdError(f"s3 delete {self.prefix}{key}: {error}") from None

    def _list(self, prefix: str) -> list[tuple[str, float]]:
        out = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    out.append((item["Key"][len(self.prefix):],
                                item["LastModified"].timestamp()))
        except (BotoCoreError, ClientError) as error:
            raise ColdError(f"s3 list {self.prefix}{prefix}: {error}") from None
        return out
