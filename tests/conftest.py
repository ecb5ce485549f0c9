"""Shared fixtures and helpers for the CDC tests.

* ``SAMPLES``: the real Debezium material in ``../shared/cdc/samples`` (override with
  ``FP_CDC_SAMPLES``). Tests that need it fail loudly when it is missing; they never skip.
* ``stores``: a fresh landing zone and offline store in a tmp dir, with the real Dagster
  resources pointed at them.
* Writers of Debezium envelope lines for ``orders`` shaped like the real 3.6.3 captures:
  schema-wrapped (base64 Decimal, or string-mode Decimal) or bare (base64 or double), plus
  key lines, tombstones, transaction markers and landing files (``.json`` / ``.json.gz``,
  optional ``.keys.json`` sibling) in the Kafka Connect S3 sink layout.
"""

from __future__ import annotations

import base64
import copy
import gzip
import importlib.util
import json
import os
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import psycopg2
import pytest

from assets.sources import orders
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource
from feature_platform.storage import Store

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("FP_CDC_SAMPLES", REPO.parent / "shared" / "cdc" / "samples"))
CAPTURED = SAMPLES / "debezium-3.6.3-captured"

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_MS = 3_600_000
ORDERS_TOPIC = orders.topic
ORDERS_DIR = f"topics/{ORDERS_TOPIC}"
PROJECT = "test"


def samples_dir() -> Path:
    assert SAMPLES.is_dir(), f"Debezium samples not found at {SAMPLES} (set FP_CDC_SAMPLES)"
    return SAMPLES


# -- value encodings ------------------------------------------------------------------------

def decimal_to_base64(value: Decimal, scale: int) -> str:
    """Debezium's precise Decimal: base64 of the big-endian two's-complement unscaled integer."""
    unscaled = int(value.scaleb(scale))
    assert Decimal(unscaled).scaleb(-scale) == value, f"{value} has more than {scale} places"
    length = max(1, (unscaled.bit_length() + 8) // 8)  # room for the sign bit
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def days_since_epoch(moment: datetime) -> int:
    return (moment - EPOCH).days


def ms(moment: datetime) -> int:
    return int((moment - EPOCH) / timedelta(milliseconds=1))


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def current_hour() -> datetime:
    return hour_floor(datetime.now(UTC))


# -- orders envelopes ----------------------------------------------------------------------

def _captured_message(name: str) -> dict:
    return json.loads((CAPTURED / name).read_text())


def orders_envelope_schema() -> dict:
    """The Connect schema of a real ``orders`` envelope (Decimal scale 2, Date)."""
    return copy.deepcopy(_captured_message("pg-create-order-decimal-base64.json")["schema"])


def orders_string_mode_schema() -> dict:
    """The same envelope schema as with ``decimal.handling.mode=string``: unit_price is a string."""
    schema = orders_envelope_schema()
    for side in schema["fields"]:
        for column in side.get("fields") or []:
            if side["field"] in ("before", "after") and column["field"] == "unit_price":
                column.clear()
                column.update({"type": "string", "optional": True, "field": "unit_price"})
    return schema


ORDERS_KEY_SCHEMA = {
    "type": "struct",
    "fields": [{"type": "int32", "optional": False, "default": 0, "field": "id"}],
    "optional": False,
    "name": "dbserver1.inventory.orders.Key",
}

ENCODINGS = ("schema-precise", "schema-string", "bare-precise", "bare-double")


def encode_order_row(row: dict | None, encoding: str) -> dict | None:
    """An ``orders`` row image as Debezium writes it in ``encoding``."""
    if row is None:
        return None
    out = {}
    for name, value in row.items():
        if name == "order_date" and value is not None:
            value = days_since_epoch(value) if isinstance(value, datetime) else value
        if name == "unit_price" and value is not None:
            if encoding.endswith("precise"):
                value = decimal_to_base64(value, 2)
            elif encoding == "schema-string":
                value = str(value)
            else:
                value = float(value)
        out[name] = value
    return out


def order_message(op: str, *, lsn: int, commit_ms: int, tx_id: int | None = None,
                  after: dict | None = None, before: dict | None = None, snapshot: object = "false",
                  ts_ms: int | None = None, encoding: str = "schema-precise") -> dict:
    """A full Debezium PostgreSQL envelope for ``orders`` (as the JsonConverter writes it)."""
    ts_ms = commit_ms + 1234 if ts_ms is None else ts_ms
    payload = {
        "before": encode_order_row(before, encoding),
        "after": encode_order_row(after, encoding),
        "source": {
            "version": "3.6.3.Final", "connector": "postgresql", "name": "dbserver1",
            "ts_ms": commit_ms, "snapshot": snapshot, "db": "postgres",
            "sequence": json.dumps([None, str(lsn)]), "ts_us": commit_ms * 1000, "ts_ns": commit_ms * 1_000_000,
            "schema": "inventory", "table": "orders", "txId": tx_id, "lsn": lsn, "xmin": None,
            "origin": None, "origin_lsn": None,
        },
        "transaction": None,
        "op": op,
        "ts_ms": ts_ms, "ts_us": ts_ms * 1000, "ts_ns": ts_ms * 1_000_000,
    }
    if op == "t":
        del payload["before"], payload["after"]
    if encoding.startswith("schema"):
        schema = orders_envelope_schema() if encoding == "schema-precise" else orders_string_mode_schema()
        return {"schema": schema, "payload": payload}
    return payload


def order_key(pk: int | None, wrapped: bool) -> dict | None:
    if pk is None:
        return None  # a truncate has a null key
    return {"schema": ORDERS_KEY_SCHEMA, "payload": {"id": pk}} if wrapped else {"id": pk}


def order_row(pk: int, *, day: datetime | int = 16862, purchaser: int = 1001, quantity: int = 1,
              product_id: int = 101, unit_price: Decimal | None = Decimal("11.75")) -> dict:
    return {"id": pk, "order_date": day, "purchaser": purchaser, "quantity": quantity,
            "product_id": product_id, "unit_price": unit_price}


def transaction_marker(status: str, tx_id: int, lsn: int, commit_ms: int) -> dict:
    return {"status": status, "id": f"{tx_id}:{lsn}", "event_count": 1 if status == "END" else None,
            "data_collections": None, "ts_ms": commit_ms}


def dumps(message: object) -> str:
    return json.dumps(message, separators=(",", ":"))


# -- landing files -------------------------------------------------------------------------

def landing_name(partition: int, offset: int, gz: bool = False, topic: str = ORDERS_TOPIC) -> str:
    """``topics/<topic>/partition=<p>/<topic>+<p>+<offset>.json[.gz]``: the S3 sink's DefaultPartitioner layout."""
    return f"topics/{topic}/partition={partition}/{topic}+{partition}+{offset:010d}.json" + (".gz" if gz else "")


def keys_name(path: str) -> str:
    for suffix in (".json.gz", ".json"):
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".keys" + suffix
    raise ValueError(path)


def write_text(root: Path | str, relative: str, text: str, mtime: datetime | None = None) -> Path:
    path = Path(root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if relative.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


def write_landing_file(root: Path | str, relative: str, lines: list[str], keys: list[str] | None = None,
                       mtime: datetime | None = None) -> Path:
    """One message per line (the S3 sink's JsonFormat), with an optional ``.keys`` sibling."""
    path = write_text(root, relative, "".join(line + "\n" for line in lines), mtime)
    if keys is not None:
        assert len(keys) == len(lines)
        write_text(root, keys_name(relative), "".join(line + "\n" for line in keys), mtime)
    return path


@dataclass
class Stores:
    root: Path
    landing_dir: Path
    offline_dir: Path

    @property
    def landing(self) -> Store:
        return Store(str(self.landing_dir))

    @property
    def offline(self) -> Store:
        """The offline store exactly as ``OfflineStoreResource.store()`` opens it."""
        return self.offline_resource.store()

    @property
    def landing_resource(self) -> LandingZoneResource:
        return LandingZoneResource(uri=str(self.landing_dir))

    @property
    def offline_resource(self) -> OfflineStoreResource:
        return OfflineStoreResource(uri=str(self.offline_dir), project=PROJECT)

    @property
    def resources(self) -> dict:
        return {"landing": self.landing_resource, "offline": self.offline_resource}


def make_stores(root: Path | str) -> Stores:
    root = Path(root)
    (root / "landing").mkdir(parents=True, exist_ok=True)
    (root / "offline").mkdir(parents=True, exist_ok=True)
    return Stores(root, root / "landing", root / "offline")


@pytest.fixture
def stores(tmp_path) -> Stores:
    return make_stores(tmp_path)


# -- real servers shared by several tests -------------------------------------------------------

POSTGRES_URL = os.environ.get("FP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/feature_platform_test")


@dataclass(frozen=True)
class PostgresDatabase:
    host: str
    port: int
    user: str
    password: str
    name: str


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[PostgresDatabase]:
    """A new, empty database on the tests' PostgreSQL server, dropped afterwards (even while
    connections to it are still open)."""
    url = urlparse(POSTGRES_URL)
    database = PostgresDatabase(url.hostname, url.port or 5432, url.username or "postgres", url.password or "",
                                f"{prefix}_{uuid.uuid4().hex[:10]}")
    admin = psycopg2.connect(host=database.host, port=database.port, user=database.user, password=url.password,
                             dbname=url.path.lstrip("/") or "postgres")
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{database.name}"')
        try:
            yield database
        finally:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    finally:
        admin.close()


def dagster_ui_answers(port: int) -> bool:
    """The Dagster webserver on 127.0.0.1:``port`` answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# -- bench scripts -----------------------------------------------------------------------------

def load_bench_script(name: str):
    """``bench/<name>.py`` as a module: the bench scripts are run as files, not a package, and
    some tests run a small version of what they measure (the fuzzer, the load test, the soak)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
