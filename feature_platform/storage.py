"""One small interface over a folder or an object store, built on ``pyarrow.fs``.

The landing zone and the offline store are both a ``Store``: a root URI (a local path, or
``s3://bucket/prefix``) and paths relative to it. Writes are atomic — a reader sees the old
object or the new one, never half of one — because every write goes to a temporary name
that readers ignore (leading ``.``) and is then renamed over the final name.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from feature_platform.faults import pause_point


class UnsafePathError(ValueError):
    """A relative path that would leave the store's root."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the store's root, with '/' separators
    size: int
    mtime_ns: int


def is_temporary_name(name: str) -> bool:
    """Names that writers use while a file is incomplete, and that readers must ignore."""
    return name.startswith((".", "_")) or name.endswith((".tmp", ".temp", ".partial"))


class Store:
    def __init__(self, uri: str):
        self.uri = uri
        if "://" not in uri:
            uri = os.path.abspath(uri)
        self.fs, self.root = pafs.FileSystem.from_uri(uri)
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

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
        with self.fs.open_input_stream(self.full_path(relative)) as stream:
            return stream.read()

    def read_table(self, relative: str) -> pa.Table:
        with self.fs.open_input_file(self.full_path(relative)) as handle:
            return pq.read_table(handle)

    # -- writing (atomic) --------------------------------------------------------------

    def _temporary_sibling(self, final: str) -> str:
        directory, name = posixpath.split(final)
        return f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"

    def write_bytes(self, relative: str, data: bytes) -> None:
        final = self.full_path(relative)
        directory = posixpath.dirname(final)
        self.fs.create_dir(directory, recursive=True)
        if not self.is_local:
            # An object store publishes a PUT atomically: no temporary name needed.
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

    def write_table(self, relative: str, table: pa.Table) -> None:
        """Write Parquet atomically; the same table always gives the same bytes."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", write_statistics=True)
        self.write_bytes(relative, buffer.getvalue())

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.full_path(relative))
        except FileNotFoundError:
            pass
