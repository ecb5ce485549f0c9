"""One small interface over a folder or an object store, built on ``pyarrow.fs``.

The landing zone and the offline store are both a ``Store``: a root URI (a local path, or
``s3://bucket/prefix``) and paths relative to it. Writes are atomic — a reader sees the old
object or the new one, never half of one. In a folder every write goes to a temporary name
that readers ignore (leading ``.``) and is then renamed over the final name. S3 has no
rename, and needs none: a single PUT of a whole object is atomic (readers get the previous
object, or none, until the PUT completes), so every write is one PUT of the complete bytes.

For ``s3://`` URIs the endpoint (any S3-compatible store) and region come from
``config.S3Options`` (``FP_S3_ENDPOINT_URL``, ``AWS_REGION``); credentials from the AWS
SDK's standard chain. Reads go through ``pyarrow.fs.S3FileSystem``; listing after a key
(``list_after``: S3's ``StartAfter``, which pyarrow does not expose) and the PUT go through
boto3.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from feature_platform.config import S3Options
from feature_platform.faults import pause_point

S3_SCHEME = "s3://"
S3_PAGE_SIZE = 1000  # the most keys one ListObjectsV2 call returns


class UnsafePathError(ValueError):
    """A relative path that would leave the store's root."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the store's root, with '/' separators
    size: int
    mtime_ns: int


# A writer killed between writing its temporary file and the rename leaves the temporary
# behind; readers skip it. Once it is this old no writer is still on it (one file is written
# in seconds), and ``remove_abandoned_temporaries`` may delete it.
ABANDONED_AFTER = timedelta(hours=1)
_OWN_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")  # what _temporary_sibling names, whole


def is_temporary_name(name: str) -> bool:
    """Names that writers use while a file is incomplete, and that readers must ignore."""
    return name.startswith((".", "_")) or name.endswith((".tmp", ".temp", ".partial"))


@dataclass(frozen=True)
class Listing:
    """Files after a key, in key order (S3's order: by the UTF-8 bytes of the path)."""

    files: list[FileEntry]  # temporary names left out
    last_key: str | None  # the greatest path looked at (temporary names included); None: nothing
    complete: bool  # True when nothing under the prefix comes after ``last_key``


# One S3 client per (options, process): clients are cheap to keep and slow to make, and an
# AWS SDK client must not cross a fork (Dagster's run workers are separate processes).
_s3_clients: dict[tuple, object] = {}


def s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    key = ("pyarrow", options, os.getpid())
    if key not in _s3_clients:
        kwargs: dict = {"region": options.region}
        if options.endpoint_url:
            scheme, _, host = options.endpoint_url.partition("://")
            kwargs.update(endpoint_override=host, scheme=scheme)
        _s3_clients[key] = pafs.S3FileSystem(**kwargs)
    return _s3_clients[key]


def s3_client(options: S3Options):
    key = ("boto3", options, os.getpid())
    if key not in _s3_clients:
        import boto3

        _s3_clients[key] = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint_url, region_name=options.region)
    return _s3_clients[key]


class Store:
    def __init__(self, uri: str, s3: S3Options | None = None):
        self.uri = uri
        self.s3: S3Options | None = None
        if uri.startswith(S3_SCHEME):
            self.s3 = s3 or S3Options.from_env()
            self.fs, self.root = s3_filesystem(self.s3), uri[len(S3_SCHEME):].strip("/")
            if not self.root:
                raise ValueError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
        else:
            self.fs, self.root = pafs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))
            self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def uri_of(self, relative: str) -> str:
        """The full URI of a path: what ``parquet_source`` and other processes can open."""
        full = self.full_path(relative)
        return f"{S3_SCHEME}{full}" if self.s3 is not None else full

    def full_path(self, relative: str) -> str:
        normalized = posixpath.normpath(relative.replace(os.sep, "/"))
        if normalized.startswith(("../", "/")) or normalized == "..":
            raise UnsafePathError(f"path {relative!r} leaves the root {self.uri}")
        return f"{self.root}/{normalized}" if normalized != "." else self.root

    def local_path(self, relative: str) -> str:
        """A path DuckDB or Spark can open directly (local stores only)."""
        return self.full_path(relative)

    # -- listing -----------------------------------------------------------------------

    def list_files(self, prefix: str = "", recursive: bool = True) -> list[FileEntry]:
        """Files below ``prefix`` (missing prefix: none), skipping temporary names at any depth."""
        base = self.full_path(prefix) if prefix else self.root
        selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
        entries = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.root) + 1:]
            below_prefix = info.path[len(base) + 1:]
            if any(is_temporary_name(part) for part in below_prefix.split("/")):
                continue
            mtime_ns = info.mtime_ns if info.mtime_ns is not None else 0
            entries.append(FileEntry(relative, info.size or 0, mtime_ns))
        return entries

    def list_after(self, prefix: str = "", start_after: str | None = None, limit: int = 10_000) -> Listing:
        """Up to ``limit`` paths below the folder ``prefix`` ("" = everything) that sort after
        ``start_after``, in key order.

        This is how a poller lists *incrementally*: on S3 one ListObjectsV2 call per 1,000
        keys, starting after the last key it saw, never the whole bucket.
        """
        if self.s3 is not None:
            keys = self._s3_keys_after(prefix, start_after)
        else:
            keys = self._local_keys_after(prefix, start_after)
        files, last_key, looked_at = [], None, 0
        try:
            for path, size, mtime_ns in keys:
                if looked_at == limit:
                    return Listing(files, last_key, complete=False)
                looked_at += 1
                last_key = path
                if not any(is_temporary_name(part) for part in path[len(prefix):].split("/")):
                    files.append(FileEntry(path, size, mtime_ns))
        except OSError:
            raise
        except Exception as error:  # botocore's errors (no endpoint, no bucket, access denied)
            if type(error).__module__.startswith("botocore"):
                raise OSError(f"cannot list {self.uri}: {error}") from error
            raise
        return Listing(files, last_key, complete=True)

    def _s3_keys_after(self, prefix: str, start_after: str | None) -> Iterator[tuple[str, int, int]]:
        bucket, _, base = self.root.partition("/")
        base = f"{base}/" if base else ""
        folder = f"{base}{prefix.strip('/')}/" if prefix.strip("/") else base
        arguments = {"Bucket": bucket, "Prefix": folder, "PaginationConfig": {"PageSize": S3_PAGE_SIZE}}
        if start_after is not None:
            arguments["StartAfter"] = base + start_after
        for page in s3_client(self.s3).get_paginator("list_objects_v2").paginate(**arguments):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue  # a "folder" marker some tools create, not a file
                mtime_ns = int(item["LastModified"].timestamp() * 1_000_000) * 1000
                yield item["Key"][len(base):], item["Size"], mtime_ns

    def _local_keys_after(self, prefix: str, start_after: str | None) -> Iterator[tuple[str, int, int]]:
        """A folder walked in S3's key order, skipping subtrees that sort wholly before ``start_after``."""

        def walk(directory: str, relative: str) -> Iterator[tuple[str, int, int]]:
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return
            # A folder's paths are "<name>/...", so it sorts as its name plus "/" among files.
            keyed = sorted(((entry.name + "/" if entry.is_dir() else entry.name), entry) for entry in entries)
            for key, entry in keyed:
                path = relative + key
                if entry.is_dir():
                    # every path below sorts between "<dir>/" and "<dir>0" ('0' follows '/')
                    if start_after is None or path[:-1] + "0" > start_after:
                        yield from walk(entry.path, path)
                elif start_after is None or path > start_after:
                    stat = entry.stat()
                    yield path, stat.st_size, stat.st_mtime_ns

        folder = prefix.strip("/")
        if folder and not os.path.isdir(self.full_path(folder)):
            if os.path.exists(self.full_path(folder)):
                raise NotADirectoryError(f"{self.full_path(folder)} is not a folder")
            return iter(())
        if not folder and not os.path.isdir(self.root):
            raise NotADirectoryError(f"{self.root} is not a folder")
        return walk(self.full_path(folder) if folder else self.root, f"{folder}/" if folder else "")

    def list_dirs(self, prefix: str) -> list[str]:
        selector = pafs.FileSelector(self.full_path(prefix), recursive=False, allow_not_found=True)
        return sorted(
            posixpath.basename(info.path)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.full_path(relative)).type == pafs.FileType.File

    # -- reading -----------------------------------------------------------------------

    def read_bytes(self, relative: str) -> bytes:
        """The bytes exactly as stored (a ``.gz`` file is not decompressed)."""
        if self.s3 is not None:
            # One GET of the whole object. pyarrow's S3 reader fetches ranges, and ranges read
            # while a writer replaces the object can come from different versions (seen here:
            # the head of one version and the tail of the next). One GET returns one version.
            bucket, _, key = self.full_path(relative).partition("/")
            try:
                return s3_client(self.s3).get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as error:
                if getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise FileNotFoundError(f"{self.uri_of(relative)} does not exist") from None
                raise
        with self.fs.open_input_stream(self.full_path(relative), compression=None) as stream:
            return stream.read()

    def read_table(self, relative: str) -> pa.Table:
        if self.s3 is not None:
            return pq.read_table(pa.BufferReader(self.read_bytes(relative)))  # one version, whole
        with self.fs.open_input_file(self.full_path(relative)) as handle:
            return pq.read_table(handle)

    def read_parquet_schema(self, relative: str) -> pa.Schema:
        """A Parquet file's schema with its metadata (only the footer is read from a folder)."""
        if self.s3 is not None:
            return pq.read_schema(pa.BufferReader(self.read_bytes(relative)))
        with self.fs.open_input_file(self.full_path(relative)) as handle:
            return pq.read_schema(handle)

    # -- writing (atomic) --------------------------------------------------------------

    def _temporary_sibling(self, final: str) -> str:
        directory, name = posixpath.split(final)
        return f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"  # _OWN_TEMPORARY matches it

    def remove_abandoned_temporaries(self, prefix: str, older_than: timedelta | None = None) -> list[str]:
        """Remove the temporary files that killed writers left directly in the folder ``prefix``
        (only names this class makes, only older than ``older_than``, default
        ``ABANDONED_AFTER``); the removed paths. Nothing to do on object stores: their writes
        are single PUTs, with no temporary file.

        One listing of one folder, so callers do it once per run for the folder they write
        into, not once per file.
        """
        if not self.is_local:
            return []
        cutoff = time.time() - (older_than if older_than is not None else ABANDONED_AFTER).total_seconds()
        try:
            entries = list(os.scandir(self.full_path(prefix)))
        except FileNotFoundError:
            return []
        removed = []
        for entry in entries:
            if not _OWN_TEMPORARY.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.remove(entry.path)
                    removed.append(f"{prefix}/{entry.name}")
            except FileNotFoundError:
                pass  # removed meanwhile by another run's sweep
        return removed

    def write_bytes(self, relative: str, data: bytes) -> None:
        final = self.full_path(relative)
        if self.s3 is not None:
            # One PutObject of the whole bytes: S3 makes the object visible only once the PUT
            # completed, so readers never see half of it (and there is no rename to use). Not
            # pyarrow's output stream: closed after an error it may complete a multipart upload
            # of the parts already sent. S3 needs no folders, so none are created.
            bucket, _, key = final.partition("/")
            s3_client(self.s3).put_object(Bucket=bucket, Key=key, Body=data)
            return
        directory = posixpath.dirname(final)
        self.fs.create_dir(directory, recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(final) as stream:
                stream.write(data)
            return
        # Write-then-rename: a process killed mid-write leaves only an ignored temporary
        # file. No fsync: it guards against power loss, not crashes, and costs ~4 ms a file
        # (a 1,000-partition backfill writes thousands); object stores are the durable option.
        temporary = self._temporary_sibling(final)
        with open(temporary, "wb") as handle:
            handle.write(data)
        pause_point("offline-write", final)  # inert outside fault-injection tests
        os.replace(temporary, final)

    def write_table(self, relative: str, table: pa.Table, **options) -> None:
        """Write Parquet atomically; the same table always gives the same bytes. ``options``:
        more ``pq.write_table`` keywords (row_group_size: pyarrow's default is up to 1Mi rows)."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", write_statistics=True, **options)
        self.write_bytes(relative, buffer.getvalue())

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.full_path(relative))
        except FileNotFoundError:
            pass


def parquet_source(connection, uris: list[str], name: str) -> str:
    """SQL naming the Parquet files ``uris`` (from ``Store.uri_of``) in a DuckDB query.

    Local files: DuckDB's own ``read_parquet``. ``s3://`` files: each read whole, in one GET
    (``Store.read_table``: a file rewritten meanwhile is read as one version, never as parts
    of two), and registered on the connection as one Arrow table named ``name``. DuckDB's
    httpfs extension is not used: it is downloaded at run time, which an offline machine
    cannot do, it has credentials of its own, and its ranged reads would mix versions too.
    """
    remote = [uri for uri in uris if uri.startswith(S3_SCHEME)]
    if not remote:
        return "read_parquet([" + ", ".join("'" + uri.replace("'", "''") + "'" for uri in uris) + "])"
    if len(remote) != len(uris):
        raise ValueError("one query cannot mix local and s3:// Parquet files")
    options = S3Options.from_env()
    tables = []
    for uri in uris:
        bucket, _, key = uri[len(S3_SCHEME):].partition("/")
        tables.append(Store(f"{S3_SCHEME}{bucket}", options).read_table(key))
    connection.register(name, pa.concat_tables(tables, promote_options="permissive"))
    return name
