"""``s3://bucket/prefix`` remotes (AWS S3, MinIO, any S3-compatible store) through s3fs.

s3fs is reached through ``fsspec.filesystem("s3")`` only (``store`` imports nothing but the
standard library, xxhash, pyfastcdc and fsspec). Credentials, region and the endpoint come from
the usual AWS chain (environment, ``~/.aws/config`` and ``credentials``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``) unless an endpoint is passed in; nothing secret is ever stored by mvc.

Conditional writes (S3 conditional requests, supported by s3fs's ``call_s3`` passing the
parameters through to botocore):

- objects, ``HEAD`` and ``config`` are written with ``PutObject(IfNoneMatch="*")``: S3 answers
  412 PreconditionFailed (s3fs raises FileExistsError) when the key exists, so nothing is ever
  overwritten and a racing writer of the same object simply finds it there;
- refs and notes lists are read with ``GetObject`` (one request gives the bytes and the ETag)
  and replaced with ``PutObject(IfMatch=<etag>)``, or created with ``IfNoneMatch="*"``; a 412
  (or 409 ConditionalRequestConflict, or 404 for a ref deleted meanwhile) means the ref moved.

s3fs's own retry loop and botocore's are switched off (one attempt each): retrying is the job
of ``store.backends.retry.RetryBackend``, so the number and pacing of attempts is ours.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import fsspec
import fsspec.asyn

from store.backends.base import Backend, read_data
from store.backends.local import check_key
from store.errors import MvcError, ObjectMissing, RemoteAccessDenied, RemoteError, RemoteMoved, RemoteNotFound, RemoteUnavailable

# One s3fs filesystem (one botocore client, one connection pool) per endpoint and settings in a
# process: creating a client costs 0.1-0.2 s, which a program pushing every checkpoint would pay each time.
_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()
BIG_UPLOAD = 256 * 1024 * 1024  # above this, s3fs's multipart put (with IfNoneMatch on completion)

_TRANSIENT_TYPES = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError", "ClientConnectorError",
    "ClientConnectionError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError", "IncompleteReadError",
    "ResponseStreamingError", "HTTPClientError", "ProxyConnectionError", "ServerTimeoutError", "TimeoutError",
    "ConnectionError", "ConnectionResetError", "ConnectionRefusedError", "ConnectionAbortedError", "BrokenPipeError",
    "IncompleteRead", "AWSConnectionError",
}
_CREDENTIAL_TYPES = {
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "ProfileNotFound", "NoAuthTokenError",
    "UnauthorizedSSOTokenError", "SSOTokenLoadError", "InvalidConfigError",
}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "OperationAborted"}
_DENIED_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled",
    "AccountProblem", "TokenRefreshRequired", "403", "Forbidden", "RequestTimeTooSkewed",
}
_MOVED_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _chain(e: BaseException) -> list[BaseException]:
    out = []
    while e is not None and e not in out and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _aws_error(chain: list[BaseException]) -> tuple[str | None, int | None]:
    for e in chain:
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return str(response["Error"].get("Code")), status
    return None, None


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix "" at the bucket root)."""
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise RemoteNotFound(f"{url} names no bucket", hint="use s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


class S3Backend(Backend):
    """A remote under ``s3://bucket/prefix``; see the module docstring for how writes are made safe."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, jobs: int = 8, connect_timeout: float = 5.0, read_timeout: float = 60.0) -> None:
        self.url = url
        self.bucket, self.prefix = split_url(url)
        self.endpoint_url = endpoint_url
        options = {
            "skip_instance_cache": True,
            "use_listings_cache": False,
            "config_kwargs": {
                "retries": {"max_attempts": 1, "mode": "standard"},
                "max_pool_connections": max(10, 2 * jobs),
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
            },
        }
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        key = (endpoint_url, jobs, connect_timeout, read_timeout)
        with _CLIENTS_LOCK:
            self.fs = _CLIENTS.get(key)
            if self.fs is None:
                try:
                    self.fs = fsspec.filesystem("s3", **options)
                except ImportError:
                    raise RemoteError("s3:// remotes need s3fs, which is not installed", hint="pip install s3fs") from None
                self.fs.retries = 1  # one attempt inside s3fs; RetryBackend owns retrying
                _CLIENTS[key] = self.fs

    def describe(self) -> str:
        return f"{self.url} (endpoint {self.endpoint_url})" if self.endpoint_url else self.url

    # -- plumbing ------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _run(self, coro_fn, key: str, *args):
        try:
            return fsspec.asyn.sync(self.fs.loop, coro_fn, *args)
        except MvcError:
            raise
        except Exception as e:
            raise self._translate(e, key) from e

    def _translate(self, e: BaseException, key: str) -> MvcError:
        chain = _chain(e)
        names = {type(x).__name__ for x in chain}
        code, status = _aws_error(chain)
        where = f"{self.describe()}: {key}" if key else self.describe()
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if names & _CREDENTIAL_TYPES:
            return RemoteAccessDenied(f"no usable AWS credentials for {self.describe()}: {detail}")
        if code == "NoSuchBucket":
            return RemoteNotFound(f"bucket {self.bucket!r} does not exist at {self.describe()}")
        if code in _DENIED_CODES or isinstance(e, PermissionError):
            return RemoteAccessDenied(f"access denied to {where}: {detail}")
        if code in ("NoSuchKey", "404", "NotFound") or isinstance(e, FileNotFoundError):
            return ObjectMissing(f"{key} is missing on the remote {self.url}")
        if code in _MOVED_CODES or isinstance(e, FileExistsError):
            return RemoteMoved(f"remote moved, fetch first: {key} on {self.url} changed since it was read")
        if (
            names & _TRANSIENT_TYPES
            or code in _TRANSIENT_CODES
            or (status is not None and status >= 500)
            or isinstance(e, (asyncio.TimeoutError, TimeoutError, ConnectionError))
            or (isinstance(e, OSError) and e.errno in (errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, getattr(errno, "EREMOTEIO", 121)))
        ):
            return RemoteUnavailable(f"cannot reach {where}: {detail}")
        return RemoteError(f"{where}: {detail}")

    # -- protocol ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        async def head():
            try:
                await self.fs._call_s3("head_object", Bucket=self.bucket, Key=self._key(key))
            except FileNotFoundError:
                return False
            return True

        return self._run(head, key)

    def get(self, key: str) -> bytes:
        data, _etag = self._get_object(key)
        return data

    def _get_object(self, key: str) -> tuple[bytes, str]:
        async def get():
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self._key(key))
            try:
                data = await resp["Body"].read()
            finally:
                resp["Body"].close()
            return data, resp.get("ETag", "")

        return self._run(get, key)

    def get_file(self, key: str, local_path: Path) -> int:
        self._run(self.fs._get_file, key, f"{self.bucket}/{self._key(key)}", str(local_path))
        return Path(local_path).stat().st_size

    def put_new(self, key: str, data: bytes | memoryview | Path) -> bool:
        if isinstance(data, Path) and data.stat().st_size > BIG_UPLOAD:
            try:
                self._run(self.fs._put_file, key, str(data), f"{self.bucket}/{self._key(key)}", mode="create")
            except RemoteMoved:
                return False
            return True
        body = bytes(read_data(data))

        async def put():
            try:
                await self.fs._call_s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*")
            except FileExistsError:
                return False
            return True

        try:
            return self._run(put, key)
        except RemoteMoved:
            return False

    def list(self, prefix: str) -> dict[str, int]:
        return self._list(prefix, None)

    def scan(self, prefix: str, max_keys: int) -> dict[str, int] | None:
        return self._list(prefix, max_keys)

    def _list(self, prefix: str, max_keys: int | None) -> dict[str, int] | None:
        async def listing():
            out: dict[str, int] = {}
            kw = {"Bucket": self.bucket, "Prefix": self.prefix + prefix, "MaxKeys": 1000}
            while True:
                resp = await self.fs._call_s3("list_objects_v2", **kw)
                for item in resp.get("Contents", []):
                    out[item["Key"][len(self.prefix):]] = int(item["Size"])
                if max_keys is not None and len(out) > max_keys:
                    return None
                if not resp.get("IsTruncated"):
                    return out
                kw["ContinuationToken"] = resp["NextContinuationToken"]

        return self._run(listing, prefix)

    def read_ref(self, key: str) -> tuple[bytes, str] | None:
        try:
            return self._get_object(key)
        except ObjectMissing:
            return None

    def swap_ref(self, key: str, version: str | None, data: bytes | None) -> None:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}

        async def swap():
            if data is None:
                if version is not None:
                    await self.fs._call_s3("delete_object", Bucket=self.bucket, Key=self._key(key), IfMatch=version)
                return
            await self.fs._call_s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, **condition)

        try:
            self._run(swap, key)
        except ObjectMissing:
            raise RemoteMoved(f"remote moved, fetch first: {key} on {self.url} was deleted since it was read") from None

    def delete(self, key: str) -> None:
        async def rm():
            await self.fs._call_s3("delete_object", Bucket=self.bucket, Key=self._key(key))

        self._run(rm, key)

    def close(self) -> None:
        pass
