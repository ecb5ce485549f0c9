"""The landing zone: where a Kafka Connect S3 sink (or anything like it) drops Debezium batches.

Layout (../shared/cdc/LANDING-LAYOUTS.md)::

    <root>/.../topics/<topic>/partition=<n>/<topic>+<n>+<offset>.json[.gz]
    <root>/.../topics/<topic>/partition=<n>/<topic>+<n>+<offset>.keys.json[.gz]   (optional)
    <root>/.../topics/<topic>/tombstone/<topic>+<n>+<offset>.keys.json            (key-only tombstones)

A file belongs to a topic when a folder on its path, or the start of its name, is that
topic. Files are immutable once they appear; names starting with ``.`` or ``_`` and names
ending in ``.tmp`` are writers' work in progress and are never read.
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from feature_platform.cdc.decoder import (
    Decoded,
    DecodeError,
    Tombstone,
    commit_ms_in_range,
    decode_message,
    parse_json,
)
from feature_platform.sources import SourceTable
from feature_platform.storage import FileEntry, Listing, Store, UnsafePathError

VALUE_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
SIDECAR_MARKERS = (".keys.", ".headers.")
TOMBSTONE_FOLDER = "tombstone"


@dataclass(frozen=True)
class LandingFile:
    path: str  # relative to the landing root
    topic: str
    kind: str  # "values": one message per line; "tombstones": key-only lines (no state)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class LineOutcome:
    line: int  # 1-based line number in the (decompressed) file
    decoded: Decoded | None  # None when the line is quarantined
    reason: str | None  # why the line was quarantined
    raw: str
    commit_ms_hint: int | None = None  # best-effort commit time of a quarantined line


def topic_of(path: str, topics: Iterable[str]) -> str | None:
    parts = path.split("/")
    known = set(topics)
    for part in parts[:-1]:
        if part in known:
            return part
    name = parts[-1]
    for topic in sorted(known, key=len, reverse=True):
        if name.startswith((topic + "+", topic + "-")):
            return topic
    return None


def classify(entry: FileEntry, topics: Iterable[str]) -> LandingFile | None:
    """A landing file to read, or None for sidecars, unknown topics and other files."""
    name = posixpath.basename(entry.path)
    if not name.endswith(VALUE_SUFFIXES):
        return None
    topic = topic_of(entry.path, topics)
    if topic is None:
        return None
    in_tombstone_folder = TOMBSTONE_FOLDER in entry.path.split("/")[:-1]
    if any(marker in name for marker in SIDECAR_MARKERS) and not in_tombstone_folder:
        return None  # read together with its value file
    kind = "tombstones" if in_tombstone_folder else "values"
    return LandingFile(entry.path, topic, kind, entry.size, entry.mtime_ns)


def list_landing_files(store: Store, topics: Iterable[str]) -> tuple[list[LandingFile], list[str]]:
    """All landing files of the given topics, and the paths of files that were not recognised."""
    topics = list(topics)
    files, unrecognised = [], []
    for entry in store.list_files():
        landing_file = classify(entry, topics)
        if landing_file is not None:
            files.append(landing_file)
        elif not any(marker in entry.path for marker in SIDECAR_MARKERS):
            unrecognised.append(entry.path)
    files.sort(key=lambda f: f.path)
    return files, unrecognised


def keys_sibling(path: str) -> str:
    for suffix in VALUE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".keys" + suffix
    return path + ".keys"


def _check_inside_root(store: Store, relative: str) -> None:
    """Refuse a landing path that escapes the root, including through a symlink."""
    full = store.full_path(relative)
    if store.is_local:
        root = os.path.realpath(store.root)
        if os.path.commonpath([root, os.path.realpath(full)]) != root:
            raise UnsafePathError(f"{relative} resolves outside the landing root (symlink?)")


def _read_text(store: Store, relative: str) -> str:
    # The bytes exactly as stored (pyarrow's open_input_stream would default to
    # compression="detect" and gunzip a *.gz file already, so gunzipping again refused every
    # .json.gz file and a corrupt one raised OSError out of the reader): decompress here, once.
    data = store.read_bytes(relative)
    if relative.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DecodeError(f"not a valid gzip file: {error}") from None
    return data.decode("utf-8", errors="surrogateescape")


def split_messages(text: str) -> list[tuple[int, str]]:
    """One message per line; a file that is one pretty-printed JSON document is one message."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > 1 and lines[0].strip() in ("{", "["):
        try:
            json.loads(text)
            return [(1, text)]
        except json.JSONDecodeError:
            pass
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, start=1)]


def _commit_hint(message: object) -> int | None:
    """The commit time of a message that failed to decode, if it can be found at all."""
    try:
        payload = message.get("payload", message) if isinstance(message, dict) else None
        if not isinstance(payload, dict):
            return None
        value = (payload.get("source") or {}).get("ts_ms", payload.get("__source_ts_ms"))
        hint = int(value) if value is not None and not isinstance(value, bool) else None
        # A hint outside the range the change log can file under an hour (the very reason the
        # line may have been refused) crashed staging of the whole file: fall back to its landing hour.
        return hint if hint is not None and commit_ms_in_range(hint) else None
    except (AttributeError, TypeError, ValueError):
        return None


def decode_lines(text: str, table: SourceTable, keys_text: str | None = None) -> list[LineOutcome]:
    """Decode every message of one file's text; a bad line is quarantined, the rest go on."""
    keys = dict(split_messages(keys_text)) if keys_text is not None else {}
    outcomes = []
    for number, raw in split_messages(text):
        if raw.strip() == "":
            # An empty value is one of the renderings of a tombstone (ENVELOPE-NOTES #6): no state.
            outcomes.append(LineOutcome(number, Tombstone(keys.get(number)), None, raw))
            continue
        message = None
        try:
            if not raw.isascii():
                try:
                    raw.encode("utf-8")  # bytes that were not UTF-8 survive as lone surrogates
                except UnicodeEncodeError:
                    raise DecodeError("line is not valid UTF-8") from None
            message = parse_json(raw)
            key_message = None
            if number in keys and keys[number].strip():
                try:
                    key_message = json.loads(keys[number])
                except json.JSONDecodeError:
                    key_message = None  # the value line still decodes on its own
            outcomes.append(LineOutcome(number, decode_message(message, table, key_message), None, raw))
        except DecodeError as error:
            outcomes.append(LineOutcome(number, None, error.reason, raw, _commit_hint(message)))
        except RecursionError:
            outcomes.append(LineOutcome(number, None, "JSON nested too deeply", raw[:10_000]))
    return outcomes


def read_landing_file(store: Store, landing_file: LandingFile, table: SourceTable) -> list[LineOutcome]:
    """Decode one landing file. A file that cannot be read at all becomes one quarantined line."""
    try:
        _check_inside_root(store, landing_file.path)
        text = _read_text(store, landing_file.path)
    except (DecodeError, UnsafePathError) as error:
        reason = error.reason if isinstance(error, DecodeError) else str(error)
        return [LineOutcome(0, None, reason, "")]
    if landing_file.kind == "tombstones":
        return [
            LineOutcome(number, Tombstone(raw), None, raw)
            for number, raw in split_messages(text)
        ]
    keys_text = None
    sibling = keys_sibling(landing_file.path)
    if store.exists(sibling):
        try:
            keys_text = _read_text(store, sibling)
        except DecodeError:
            keys_text = None  # keys are an aid; the values carry the primary key themselves
    return decode_lines(text, table, keys_text)


# -- incremental listing ------------------------------------------------------------------------

@dataclass
class ScanState:
    """Where a poller's listing of the landing zone stands (kept in the sensor's cursor).

    * ``frontier``: every path up to it was listed and taken. New files usually sort after
      it: a Kafka Connect sink names them by increasing, zero-padded offset, and time-based
      folders (``year=/month=/day=/hour=``) grow at the end.
    * ``folders``: recently active folders and the last path taken in each. With several
      Kafka partitions (``partition=0``, ``partition=1``...) a new file of partition 0 sorts
      *before* the frontier, but after its own folder's mark: one listing per folder finds it.
    * ``sweep_after``: a rolling pass over the whole zone, a bounded slice per tick, finds the
      rest (a file landing late in an old, no longer active folder; a new folder that sorts
      early). Every file is found within one full pass.
    """

    frontier: str | None = None
    sweep_after: str | None = None
    folders: dict[str, list] = field(default_factory=dict)  # folder -> [last path taken, when it last got a new file (s)]

    def to_json(self) -> dict:
        return {"frontier": self.frontier, "sweep_after": self.sweep_after, "folders": self.folders}

    @classmethod
    def from_json(cls, data: dict | None) -> "ScanState":
        data = data or {}
        return cls(data.get("frontier"), data.get("sweep_after"), dict(data.get("folders") or {}))


@dataclass
class Scan:
    """One tick's listing: the landing files it saw, and how to move the state on."""

    files: list[LandingFile]  # every landing file seen, deduplicated, in path order
    unrecognised: list[str]
    listings: list[tuple[str, str | None, Listing]]  # (kind, folder, listing)

    @property
    def swept(self) -> bool:
        """Whether this scan listed a slice of the rolling sweep."""
        return any(kind == "sweep" for kind, _, _ in self.listings)

    def advance(self, state: ScanState, taken: set[str], announced: set[str], now: float, max_folders: int,
                folder_idle_seconds: float) -> ScanState:
        """The state after this tick, given the landing paths taken now and those announced before.

        Each mark moves only over a run of paths that are all done (taken, announced, or no
        landing file at all: sidecars, other files, temporary names), so a file left for a
        later tick (``max_files_per_tick``) is listed again.
        """
        pending = {f.path for f in self.files} - taken - announced

        def moved(mark: str | None, listing: Listing) -> str | None:
            for entry in listing.files:
                if entry.path in pending:
                    return mark
                mark = entry.path
            if listing.last_key is not None and (mark is None or listing.last_key > mark):
                return listing.last_key  # past trailing temporary names too
            return mark

        new = ScanState(state.frontier, state.sweep_after, {k: list(v) for k, v in state.folders.items()})
        for kind, folder, listing in self.listings:
            if kind == "frontier":
                new.frontier = moved(state.frontier, listing)
            elif kind == "sweep":
                finished = listing.complete and not any(e.path in pending for e in listing.files)
                new.sweep_after = None if finished else moved(state.sweep_after, listing)  # a pass ends: start again
            elif folder in new.folders:
                new.folders[folder][0] = moved(state.folders[folder][0], listing)
        # Folders where a file was taken become (or stay) active. A new folder's mark is the end
        # of its unbroken run of done files; a known folder's mark never goes back.
        for folder in sorted({posixpath.dirname(path) for path in taken}):
            mark = (new.folders.get(folder) or [None])[0]
            for path in sorted(f.path for f in self.files if posixpath.dirname(f.path) == folder):
                if path in pending:
                    break
                if mark is None or path > mark:
                    mark = path
            new.folders[folder] = [mark, now]
        recent = sorted(((seen, folder) for folder, (_, seen) in new.folders.items()
                         if now - seen <= folder_idle_seconds), reverse=True)
        new.folders = {folder: new.folders[folder] for _, folder in recent[:max_folders]}
        return new


def scan_landing_zone(store: Store, topics: Iterable[str], state: ScanState, keys_per_listing: int = 5000,
                      time_budget_seconds: float = 15.0, sweep: bool = True) -> Scan:
    """List what may be new since ``state``: after each active folder's mark, after the
    frontier, and (once the frontier has caught up) the next slice of the rolling sweep.

    Never the whole zone in one tick: each listing stops after ``keys_per_listing`` keys
    (on S3, ListObjectsV2 with ``StartAfter``, 1,000 keys a request). ``sweep=False`` leaves
    the sweep for a later scan (a poller that scans often sweeps less often).
    """
    began = time.monotonic()
    topics = list(topics)
    listings: list[tuple[str, str | None, Listing]] = []
    frontier = store.list_after("", state.frontier, keys_per_listing)
    listings.append(("frontier", None, frontier))
    for folder, (mark, _) in sorted(state.folders.items()):
        if time.monotonic() - began > time_budget_seconds:
            break  # the sweep finds what these would have found, a little later
        if state.frontier is not None and mark is not None and mark >= state.frontier:
            continue  # the frontier listing already covers this folder past its mark
        listings.append(("folder", folder, store.list_after(folder, mark, keys_per_listing)))
    if sweep and frontier.complete:
        listings.append(("sweep", None, store.list_after("", state.sweep_after, keys_per_listing)))
    seen: dict[str, LandingFile] = {}
    unrecognised: set[str] = set()
    for _, _, listing in listings:
        for entry in listing.files:
            landing_file = classify(entry, topics)
            if landing_file is not None:
                seen[entry.path] = landing_file
            elif not any(marker in entry.path for marker in SIDECAR_MARKERS):
                unrecognised.add(entry.path)
    return Scan(sorted(seen.values(), key=lambda f: f.path), sorted(unrecognised), listings)
