"""What fsspec does not offer on S3, GCS and Azure Blob: a read that returns the object's
version, a write only over that version (or only where nothing is), and a server-side copy
stamped with metadata. One small class per client library, each calling the client that the
filesystem already holds (same credentials, endpoint, session and retries), picked by what the
filesystem has (:func:`objects_for`), never by its name.

Checked against botocore 1.43 / s3fs 2026.9, gcsfs 2026.10, adlfs 2026.8 / azure-storage-blob 12.31
(and moto 5.2, fake-gcs-server 1.54, azurite 3.35):

- S3: ``GetObject`` (a range) gives the ETag; ``PutObject`` with ``If-Match: <etag>`` (botocore
  >= 1.35.69) or ``If-None-Match: *`` (>= 1.35.2), 412 when lost, 409 ``ConditionalRequestConflict``
  to retry; ``CopyObject`` with ``MetadataDirective=REPLACE`` stamps the copy. s3fs passes extra
  ``pipe_file``/``cp_file`` arguments through, but its copy first looks the source up (a HEAD) and
  passes them to a multipart copy above 5 GB where ``MetadataDirective`` is not a parameter: the
  copy is called here, the multipart one only when S3 refuses a single copy as too large.
- GCS: the media download answers ``x-goog-generation``; an upload with ``ifGenerationMatch``
  (0: only if absent) is conditional, 412 when lost. gcsfs sends only ``ifGenerationMatch=0``
  (``mode="create"``) and its rewrite sends no destination resource: both are called here through
  gcsfs's own request method. fake-gcs-server honours the condition on multipart uploads only
  (not ``uploadType=media``), so the upload is multipart, as gcsfs's are.
- Azure: ``download_blob`` gives the ETag; ``upload_blob(etag=, match_condition=IfNotModified)`` or
  ``overwrite=False`` is conditional (adlfs's ``pipe_file`` passes them through); ``Copy Blob`` with
  ``x-ms-meta-*`` stamps the copy (adlfs's ``cp_file`` sends none), and a copy Azure runs in the
  background is waited for here.
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from typing import Any
from urllib.parse import quote

from lightning_bestlink._storage.base import LostRace

#: S3 copies at most this many bytes in one CopyObject; above it, a multipart copy
S3_COPY_LIMIT = 5 * 2**30
#: tries of a conditional S3 write answered 409 ConditionalRequestConflict (another conditional
#: write of the same key was in flight: AWS says to try again)
S3_CONFLICT_TRIES = 6
#: how long to wait for a copy that Azure runs in the background
AZURE_COPY_WAIT = 1800.0


class Objects:
    """The versioned read, conditional write and stamped copy of one object store's client."""

    #: whether :meth:`write` can be conditional with this client (a client too old cannot)
    can_swap = True
    #: why not, when it cannot
    swap_missing = ""
    #: whether :meth:`head` is needed: the client's ``info()`` leaves the user metadata out
    own_head = False

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _run(self, coro: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, lambda: coro)

    def head(self, path: str) -> dict[str, Any] | None:
        """``info()`` of ``path`` with the object's user metadata under ``"metadata"`` (None:
        nothing there), where the client's own ``info()`` leaves the metadata out (:attr:`own_head`)."""
        raise NotImplementedError

    def read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        """At most ``limit + 1`` bytes of the object at ``path`` and its version; None: no object."""
        raise NotImplementedError

    def write(self, path: str, data: bytes, expect: str | None) -> None:
        """Write ``data`` only over version ``expect`` (None: only where nothing is); :class:`LostRace` if not."""
        raise NotImplementedError

    def copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        """Copy ``src`` to ``dst`` on the server, ``dst`` carrying ``metadata`` (not ``src``'s)."""
        raise NotImplementedError


def _lost(path: str, why: str) -> LostRace:
    return LostRace(errno.EEXIST, f"{path!r} was written by another writer since it was read ({why})")


# --- S3 (s3fs, botocore) ---------------------------------------------------------------------


def _s3_code(err: BaseException) -> str | None:
    """The S3 error code behind an s3fs error (s3fs keeps botocore's ``ClientError`` as the cause)."""
    cause = err if hasattr(err, "response") else err.__cause__
    response = getattr(cause, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


_S3_PUT_CONDITIONS: bool | None = None


def _botocore_has_conditional_put() -> bool:
    """Whether the installed botocore can send ``If-Match`` on ``PutObject`` (1.35.69 or later)."""
    global _S3_PUT_CONDITIONS
    if _S3_PUT_CONDITIONS is None:
        from botocore.loaders import create_loader

        model = create_loader().load_service_model("s3", "service-2")
        members = model["shapes"][model["operations"]["PutObject"]["input"]["shape"]]["members"]
        _S3_PUT_CONDITIONS = "IfMatch" in members and "IfNoneMatch" in members
    return _S3_PUT_CONDITIONS


class S3Objects(Objects):
    own_head = True  # s3fs's info() drops HeadObject's Metadata

    def __init__(self, fs: Any) -> None:
        super().__init__(fs)
        if not _botocore_has_conditional_put():
            import botocore

            self.can_swap = False
            self.swap_missing = (
                f"botocore {botocore.__version__} cannot send If-Match on PutObject (1.35.69 or later can): "
                f"upgrade it (pip install -U botocore s3fs)"
            )

    def head(self, path: str) -> dict[str, Any] | None:
        return self._run(self._head(path))  # type: ignore[no-any-return]

    async def _head(self, path: str) -> dict[str, Any] | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            out = await self.fs._call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            # a "folder" (objects below key/) is what s3fs's info() would describe
            found = await self.fs._call_s3(
                "list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", Delimiter="/", MaxKeys=1
            )
            if found.get("KeyCount") or found.get("Contents") or found.get("CommonPrefixes"):
                return {"name": path, "size": 0, "type": "directory"}
            return None
        # the keys and values of s3fs's info(), so identities computed from either agree
        return {
            "ETag": out.get("ETag", ""),
            "LastModified": out.get("LastModified", ""),
            "size": out["ContentLength"],
            "name": f"{bucket}/{key}",
            "type": "file",
            "metadata": out.get("Metadata") or {},
        }

    def read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        return self._run(self._read(path, limit))  # type: ignore[no-any-return]

    async def _read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            out = await self.fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{limit}")
        except FileNotFoundError:
            return None
        try:
            data = await out["Body"].read()
        finally:
            out["Body"].close()
        return data, str(out["ETag"])

    def write(self, path: str, data: bytes, expect: str | None) -> None:
        self._run(self._write(path, data, expect))

    async def _write(self, path: str, data: bytes, expect: str | None) -> None:
        bucket, key, _ = self.fs.split_path(path)
        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        for attempt in range(S3_CONFLICT_TRIES):
            try:
                await self.fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
                return
            except OSError as err:
                code = _s3_code(err)
                if code == "PreconditionFailed" or (code == "NoSuchKey" and expect is not None):
                    raise _lost(path, f"S3 answered {code}") from err
                if code != "ConditionalRequestConflict" or attempt + 1 == S3_CONFLICT_TRIES:
                    raise
            await asyncio.sleep(0.05 * 2**attempt)

    def copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        self._run(self._copy(src, dst, metadata))

    async def _copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        b1, k1, v1 = self.fs.split_path(src)
        b2, k2, _ = self.fs.split_path(dst)
        source = {"Bucket": b1, "Key": k1, **({"VersionId": v1} if v1 else {})}
        try:
            await self.fs._call_s3(
                "copy_object", Bucket=b2, Key=k2, CopySource=source, MetadataDirective="REPLACE", Metadata=metadata
            )
            return
        except OSError as err:
            if _s3_code(err) != "InvalidRequest":
                raise
            size = (await self.fs._info(src))["size"]
            if size <= S3_COPY_LIMIT:
                raise
        # above 5 GB: parts copied on the server (UploadPartCopy), the metadata given when the upload starts
        await self.fs._copy_managed(src, dst, size, Metadata=metadata)


# --- Google Cloud Storage (gcsfs) --------------------------------------------------------------


class GcsObjects(Objects):
    def read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        return self._run(self._read(path, limit))  # type: ignore[no-any-return]

    async def _read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        try:
            headers, data = await self.fs._call("GET", self.fs.url(path), headers={"Range": f"bytes=0-{limit}"})
        except FileNotFoundError:
            return None
        return data, str(headers["x-goog-generation"])

    def write(self, path: str, data: bytes, expect: str | None) -> None:
        self._run(self._write(path, data, expect))

    async def _write(self, path: str, data: bytes, expect: str | None) -> None:
        bucket, key, _ = self.fs.split_path(path)
        part = json.dumps({"name": key})
        body = (
            (
                f"--==0==\nContent-Type: application/json; charset=UTF-8\n\n{part}\n--==0==\nContent-Type: "
                f"application/json\n\n"
            ).encode()
            + data
            + b"\n--==0==--"
        )
        try:
            await self.fs._call(
                "POST",
                f"{self.fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
                uploadType="multipart",
                ifGenerationMatch=expect or "0",
                headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                data=body,
                json_out=True,
            )
        except FileExistsError as err:  # gcsfs's name for 412 Precondition Failed
            raise _lost(path, "GCS answered 412") from err

    def copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        self._run(self._copy(src, dst, metadata))

    async def _copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        b1, k1, g1 = self.fs.split_path(src)
        b2, k2, _ = self.fs.split_path(dst)
        token = None
        while True:  # GCS may answer "not done yet" for a large copy: repeat with its token until done
            out = await self.fs._call(
                "POST",
                "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                b1,
                k1,
                b2,
                k2,
                json={"metadata": metadata},  # the destination's metadata, instead of the source's
                json_out=True,
                sourceGeneration=g1,
                rewriteToken=token,
            )
            if out.get("done") is True:
                return
            token = out["rewriteToken"]


# --- Azure Blob (adlfs, azure-storage-blob) ------------------------------------------------------


class AzureObjects(Objects):
    def read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        return self._run(self._read(path, limit))  # type: ignore[no-any-return]

    async def _read(self, path: str, limit: int) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        container, blob, _ = self.fs.split_path(path)
        async with self.fs.service_client.get_blob_client(container, blob) as client:
            try:
                stream = await client.download_blob(offset=0, length=limit + 1, **self.fs._timeout_kwargs)
            except ResourceNotFoundError:
                return None
            return await stream.readall(), str(stream.properties.etag)

    def write(self, path: str, data: bytes, expect: str | None) -> None:
        self._run(self._write(path, data, expect))

    async def _write(self, path: str, data: bytes, expect: str | None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        condition: dict[str, Any] = {"overwrite": False}
        if expect is not None:
            condition = {"overwrite": True, "etag": expect, "match_condition": MatchConditions.IfNotModified}
        container, blob, _ = self.fs.split_path(path)
        async with self.fs.service_client.get_blob_client(container, blob) as client:
            try:
                # adlfs marks the blobs it writes as files; so does this
                marked = {"is_directory": "false"}
                await client.upload_blob(data, metadata=marked, **condition, **self.fs._timeout_kwargs)
            except HttpResponseError as err:
                code = getattr(err, "error_code", None)
                if code in ("ConditionNotMet", "BlobAlreadyExists", "BlobNotFound"):
                    raise _lost(path, f"Azure answered {code}") from err
                raise

    def copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        self._run(self._copy(src, dst, metadata))

    async def _copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        c1, b1, v1 = self.fs.split_path(src)
        c2, b2, _ = self.fs.split_path(dst)
        source = self.fs.service_client.get_blob_client(c1, b1).url + (f"?versionid={v1}" if v1 else "")
        deadline = time.monotonic() + AZURE_COPY_WAIT
        async with self.fs.service_client.get_blob_client(c2, b2) as client:
            out = await client.start_copy_from_url(source, metadata={"is_directory": "false", **metadata})
            status, detail, delay = out.get("copy_status"), "", 0.1
            # Azure may run the copy in the background (202, status "pending"): the alias is
            # complete only once it says "success", so wait for that
            while status == "pending" and time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                props = await client.get_blob_properties(**self.fs._timeout_kwargs)
                if props.copy.id != out.get("copy_id"):
                    # another writer's copy replaced this one: that writer reads the record after
                    # its copy and copies again if the record moved on, as this one would
                    return
                status, detail = props.copy.status, props.copy.status_description or ""
        if status != "success":
            message = f"Azure did not complete the copy of {src!r} to {dst!r}: {status} {detail}"
            raise OSError(errno.EIO, message.strip())


def objects_for(fs: Any) -> Objects | None:
    """The object-store client behind ``fs``, found by what it has; None for other filesystems."""
    if hasattr(fs, "_call_s3") and hasattr(fs, "_copy_managed"):
        return S3Objects(fs)
    if hasattr(fs, "_call") and hasattr(fs, "_location") and hasattr(fs, "url"):
        return GcsObjects(fs)
    if hasattr(fs, "service_client") and hasattr(fs, "_timeout_kwargs"):
        return AzureObjects(fs)
    return None
