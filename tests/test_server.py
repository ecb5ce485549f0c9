"""The online feature server, over real HTTP (uvicorn on a free loopback port) and a real Redis.

Data: rows written with ``RedisOnlineStore.write_latest`` (Arrow tables in each view's
``history_schema()``) under a project name of this test run only, then the synced-through
times set so that ``customer_orders`` and ``customer_profile`` are fresh, ``product_sales``
is older than its TTL and ``product_inventory`` was never synced.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
import redis
import uvicorn

from assets.feature_views import FEATURE_SERVICES, churn_model, customer_orders, customer_profile, \
    product_inventory, product_sales
from feature_platform import server as server_module
from feature_platform.config import Settings
from feature_platform.expressions import INT
from feature_platform.feature_store import FeatureStore
from feature_platform.feature_view import OnDemandFeature
from feature_platform.online_store import RedisOnlineStore
from feature_platform.registry import Registry
from feature_platform.server import create_app, openapi_document
from reliability import cli_environment, start_cli

UTC = timezone.utc
REDIS_URL = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PROJECT = f"servertest_{uuid.uuid4().hex[:10]}"
T = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # synced-through of the fresh views
REQUEST_TIME = T + timedelta(hours=1)
EPOCH_TEXT = "1970-01-01T00:00:00Z"
SECRET = "hunter2-sup3r-secret"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


LAST_ORDER_1001 = midnight(T - timedelta(days=5))
LAST_ORDER_1002 = midnight(T - timedelta(days=1))


# -- HTTP ----------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    text: str
    headers: dict

    @property
    def json(self):
        return json.loads(self.text)


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                chunks: list[bytes] | None = None) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if chunks is not None:
                connection.request(method, path, body=iter(chunks), encode_chunked=True,
                                   headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
            else:
                connection.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                                     **(headers or {})})
            answer = connection.getresponse()
            return Response(answer.status, answer.read().decode(), dict(answer.getheaders()))
        finally:
            connection.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, payload, path: str = "/get-online-features") -> Response:
        return self.request("POST", path, body=json.dumps(payload).encode())


@contextmanager
def running(app):
    """``app`` served by uvicorn on a free loopback port, in a thread; yields a Client."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Client(port)
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- data ----------------------------------------------------------------------------------------

def make_store(tmp_path, redis_url: str = REDIS_URL, registry: Registry | None = None) -> FeatureStore:
    settings = Settings.from_env({"FP_REDIS_URL": redis_url, "FP_PROJECT": PROJECT, "FP_DATA_DIR": str(tmp_path)})
    return FeatureStore(settings, registry or Registry.from_module("assets.feature_views"))


def write(online: RedisOnlineStore, view, rows: list[dict]) -> None:
    schema = view.history_schema()
    full = [{name: row.get(name, False if name == "_deleted" else None) for name in schema.names} for row in rows]
    summary = online.write_latest(view, pa.Table.from_pylist(full, schema=schema).to_batches())
    assert summary.applied == len(rows)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as error:
        pytest.fail(f"the server tests need Redis at {REDIS_URL} (FP_TEST_REDIS_URL): {error}")
    feature_store = make_store(tmp_path_factory.mktemp("server"))
    online = feature_store.online
    write(online, customer_orders, [
        {"customer_id": 1001, "valid_from": T - timedelta(hours=1), "order_count_30d": 3,
         "total_spend_30d": Decimal("1250.50"), "avg_order_value_30d": 416.8333333333333,
         "order_value_stddev_30d": 12.5, "last_order_date": LAST_ORDER_1001, "is_high_value": True,
         "is_frequent_buyer": False, "avg_days_between_orders": 10.0},
        {"customer_id": 1002, "valid_from": T - timedelta(hours=2), "order_count_30d": 1,
         "total_spend_30d": Decimal("20.00"), "avg_order_value_30d": 20.0, "order_value_stddev_30d": None,
         "last_order_date": LAST_ORDER_1002, "is_high_value": False, "is_frequent_buyer": False,
         "avg_days_between_orders": 30.0},
    ])  # 1003: never written, so the view's empty values (count 0, sum 0, ...)
    write(online, customer_profile, [
        {"customer_id": 1001, "valid_from": T - timedelta(hours=3), "first_name": "Ada", "last_name": "Lovelace",
         "email": "ada@example.com", "biography_length": 42},
        {"customer_id": 1002, "valid_from": T - timedelta(minutes=30), "_deleted": True},
    ])
    write(online, product_sales, [
        {"product_id": 501, "valid_from": T - timedelta(days=3, hours=1), "units_sold_7d": 14,
         "revenue_7d": Decimal("140.00"), "unique_customers_7d": 4, "sales_per_day": 2.0},
    ])
    write(online, product_inventory, [{"product_id": 501, "valid_from": T - timedelta(days=1), "quantity_on_hand": 9}])
    online.advance_synced_through(customer_orders, T)
    online.advance_synced_through(customer_profile, T)
    online.advance_synced_through(product_sales, T - timedelta(days=3))  # TTL 2 days: stale
    # product_inventory: never synced, so stale
    yield feature_store
    client = online.client
    keys = list(client.scan_iter(match=f"fp:{PROJECT}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def client(store):
    with running(create_app(store)) as http_client:
        yield http_client


def by_name(body: dict) -> dict[str, dict]:
    names = body["metadata"]["feature_names"]
    assert len(names) == len(body["results"])
    return dict(zip(names, body["results"]))


# -- reading features ----------------------------------------------------------------------------

def test_feature_service(client):
    response = client.post({"feature_service": "churn_model", "entities": {"customer_id": [1001, 1002, 1003]},
                            "request_time": iso(REQUEST_TIME)})
    assert response.status == 200, response.text
    body = response.json
    assert body["metadata"]["feature_names"] == ["customer_id", "order_count_30d", "total_spend_30d",
                                                 "avg_order_value_30d", "days_since_last_order", "is_high_value",
                                                 "biography_length"]
    assert body["stale_views"] == []
    results = by_name(body)
    assert results["customer_id"] == {"values": [1001, 1002, 1003], "statuses": ["PRESENT"] * 3,
                                      "event_timestamps": [EPOCH_TEXT] * 3}
    assert results["order_count_30d"] == {
        "values": [3, 1, 0], "statuses": ["PRESENT"] * 3,
        "event_timestamps": [iso(T - timedelta(hours=1)), iso(T - timedelta(hours=2)), EPOCH_TEXT]}
    assert all(type(v) is int for v in results["order_count_30d"]["values"])
    assert results["total_spend_30d"]["values"] == [1250.5, 20.0, 0.0]
    assert all(type(v) is float for v in results["total_spend_30d"]["values"])
    assert results["avg_order_value_30d"]["values"] == [416.8333333333333, 20.0, None]
    assert results["avg_order_value_30d"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    days = [(REQUEST_TIME - LAST_ORDER_1001) // timedelta(days=1), (REQUEST_TIME - LAST_ORDER_1002) // timedelta(days=1)]
    assert results["days_since_last_order"]["values"] == [*days, None]
    assert results["days_since_last_order"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert results["is_high_value"]["values"] == [True, False, False]
    assert all(type(v) is bool for v in results["is_high_value"]["values"])
    assert results["biography_length"] == {  # 1002 deleted, 1003 never written
        "values": [42, None, None], "statuses": ["PRESENT", "NOT_FOUND", "NOT_FOUND"],
        "event_timestamps": [iso(T - timedelta(hours=3)), EPOCH_TEXT, EPOCH_TEXT]}


def test_feature_list_timestamps_strings_and_stale_views(client):
    response = client.post({
        "features": ["product_sales:units_sold_7d", "customer_orders:last_order_date", "customer_profile:email",
                     "product_inventory:quantity_on_hand", "product_sales:revenue_7d"],
        "entities": {"product_id": [501, 502], "customer_id": [1001, 1003]},
        "full_feature_names": True, "request_time": iso(REQUEST_TIME)})
    assert response.status == 200, response.text
    body = response.json
    assert body["metadata"]["feature_names"] == [
        "product_id", "customer_id", "product_sales__units_sold_7d", "customer_orders__last_order_date",
        "customer_profile__email", "product_inventory__quantity_on_hand", "product_sales__revenue_7d"]
    assert sorted(body["stale_views"]) == ["product_inventory", "product_sales"]
    results = by_name(body)
    assert results["product_id"]["values"] == [501, 502]
    assert results["customer_id"]["values"] == [1001, 1003]
    for column in ("product_sales__units_sold_7d", "product_inventory__quantity_on_hand", "product_sales__revenue_7d"):
        assert results[column]["values"] == [None, None]
        assert results[column]["statuses"] == ["OUTSIDE_MAX_AGE"] * 2
    assert results["customer_orders__last_order_date"]["values"] == [iso(LAST_ORDER_1001), None]
    assert results["customer_orders__last_order_date"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert results["customer_profile__email"]["values"] == ["ada@example.com", None]


def test_replay_and_default_request_time(client):
    later = client.post({"features": ["customer_orders:order_count_30d", "customer_profile:first_name"],
                         "entities": {"customer_id": [1001]}, "request_time": iso(T + timedelta(days=3))})
    assert later.status == 200, later.text
    assert later.json["stale_views"] == ["customer_orders"]  # TTL 2 days; the profile's is 7
    results = by_name(later.json)
    assert results["order_count_30d"] == {"values": [None], "statuses": ["OUTSIDE_MAX_AGE"],
                                          "event_timestamps": [iso(T - timedelta(hours=1))]}
    assert results["first_name"]["values"] == ["Ada"]

    now = client.post({"features": ["customer_orders:order_count_30d"], "entities": {"customer_id": [1001]}})
    assert now.status == 200, now.text
    assert now.json["stale_views"] == []
    assert by_name(now.json)["order_count_30d"]["values"] == [3]


def test_no_entities(client):
    response = client.post({"feature_service": "demand_forecast", "entities": {"product_id": []}})
    assert response.status == 200, response.text
    assert all(result["values"] == [] for result in response.json["results"])


# -- request errors ------------------------------------------------------------------------------

def assert_error(response: Response, status: int, *fragments: str) -> str:
    assert response.status == status, response.text
    assert response.headers.get("content-type", "").startswith("application/json")
    message = response.json["error"]
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("payload, status, fragments", [
    ({"features": ["customer_orders:nope"], "entities": {"customer_id": [1]}}, 404, ["customer_orders:nope"]),
    ({"features": ["no_such_view:x"], "entities": {"customer_id": [1]}}, 404, ["no_such_view"]),
    ({"feature_service": "no_such_service", "entities": {"customer_id": [1]}}, 404, ["no_such_service"]),
    ({"features": ["no_colon"], "entities": {"customer_id": [1]}}, 404, ["no_colon"]),
    ({"features": ["customer_orders:order_count_30d"], "entities": {"product_id": [1]}}, 400, ["customer_id"]),
    ({"feature_service": "churn_model", "entities": {}}, 400, ["customer_id"]),
    ({"features": ["customer_orders:order_count_30d", "product_sales:units_sold_7d"],
      "entities": {"customer_id": [1, 2], "product_id": [1]}}, 400, ["differ in length"]),
    ({"features": ["customer_orders:order_count_30d", "customer_orders:order_count_30d"],
      "entities": {"customer_id": [1]}}, 400, ["order_count_30d"]),
    ({"entities": {"customer_id": [1]}}, 400, ["features", "feature_service"]),
    ({"features": ["customer_orders:order_count_30d"], "feature_service": "churn_model",
      "entities": {"customer_id": [1]}}, 400, ["exactly one"]),
    ({"features": "customer_orders:order_count_30d", "entities": {"customer_id": [1]}}, 400, ['"features"']),
    ({"features": [1, 2], "entities": {"customer_id": [1]}}, 400, ['"features"']),
    ({"features": [], "entities": {"customer_id": [1]}}, 400, ["empty"]),
    ({"feature_service": 7, "entities": {"customer_id": [1]}}, 400, ["feature_service"]),
    ({"feature_service": "churn_model"}, 400, ['"entities"']),
    ({"feature_service": "churn_model", "entities": [1001]}, 400, ['"entities"']),
    ({"feature_service": "churn_model", "entities": {"customer_id": 1001}}, 400, ["customer_id", "list"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": ["1001"]}}, 400, ["customer_id", "integer"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [1001.5]}}, 400, ["customer_id", "integer"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [True]}}, 400, ["customer_id", "integer"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [1001, None]}}, 400, ["customer_id", "null"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [1]}, "full_feature_names": "yes"}, 400,
     ["full_feature_names"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [1]}, "request_time": "yesterday"}, 400,
     ["request_time", "yesterday"]),
    ({"feature_service": "churn_model", "entities": {"customer_id": [1]}, "request_time": 1700000000}, 400,
     ["request_time"]),
    ([1, 2, 3], 400, ["JSON object"]),
])
def test_request_errors(client, payload, status, fragments):
    assert_error(client.post(payload), status, *fragments)


def test_malformed_json(client):
    assert_error(client.request("POST", "/get-online-features", body=b'{"features": ["a:b"'), 400, "JSON")
    assert_error(client.request("POST", "/get-online-features", body=b"\xff\xfe"), 400, "JSON")
    assert_error(client.request("POST", "/get-online-features", body=b""), 400, "JSON")


def test_limits(store):
    with running(create_app(store, max_entities=3, max_body_bytes=400)) as limited:
        ok = limited.post({"feature_service": "churn_model", "entities": {"customer_id": [1001, 1002, 1003]}})
        assert ok.status == 200, ok.text
        assert_error(limited.post({"feature_service": "churn_model", "entities": {"customer_id": [1, 2, 3, 4]}}),
                     413, "4 entities", "3")
        big = json.dumps({"feature_service": "churn_model", "entities": {"customer_id": [1]}, "pad": "x" * 500})
        assert_error(limited.request("POST", "/get-online-features", body=big.encode()), 413, "400")
        # no Content-Length: the limit holds while the body streams in
        chunks = [big[i:i + 100].encode() for i in range(0, len(big), 100)]
        assert_error(limited.request("POST", "/get-online-features", chunks=chunks), 413, "400")
        small = json.dumps({"feature_service": "churn_model", "entities": {"customer_id": [1001]}})
        streamed = limited.request("POST", "/get-online-features", chunks=[small[:20].encode(), small[20:].encode()])
        assert streamed.status == 200, streamed.text


@pytest.mark.timeout(120)
def test_serve_command_refuses_a_body_over_max_body_bytes(store, tmp_path):
    """``feature-platform serve --max-body-bytes`` in its own process: a body of the limit is
    served, one byte more is a 413 naming the limit, declared or streamed."""
    port, limit, log = closed_port(), 600, tmp_path / "serve.log"
    environment = cli_environment(tmp_path, PROJECT, REDIS_URL)
    process = start_cli(environment, "serve", "--port", str(port), "--max-body-bytes", str(limit),
                        "--log-level", "warning", log=log)
    try:
        served = Client(port)
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "feature-platform serve did not answer /health within 60 s"
            try:
                if served.get("/health").status == 200:
                    break
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)

        def padded(size: int) -> bytes:
            body = json.dumps({"feature_service": "churn_model", "entities": {"customer_id": [1001]}, "pad": ""})
            return body.replace('"pad": ""', '"pad": "' + "x" * (size - len(body)) + '"').encode()

        at_limit = served.request("POST", "/get-online-features", body=padded(limit))
        assert at_limit.status == 200, at_limit.text
        assert by_name(at_limit.json)["order_count_30d"]["values"] == [3]
        over = padded(limit + 1)
        assert_error(served.request("POST", "/get-online-features", body=over), 413, "601 bytes", "600 bytes",
                     "--max-body-bytes")
        streamed = served.request("POST", "/get-online-features", chunks=[over[:400], over[400:]])
        assert_error(streamed, 413, "limit of 600 bytes", "--max-body-bytes")
        assert served.get("/openapi.json").json["paths"]["/get-online-features"]["post"]["responses"]["413"][
            "description"].startswith("Body over 600 bytes")
    finally:
        process.terminate()
        process.wait(20)


def test_unknown_routes_and_methods(client):
    assert_error(client.get("/nope"), 404, "/nope")
    assert_error(client.get("/get-online-features"), 405, "GET")


# -- the registry --------------------------------------------------------------------------------

def test_feature_services(client):
    response = client.get("/feature-services")
    assert response.status == 200
    services = {s["name"]: s for s in response.json["feature_services"]}
    assert set(services) == {s.name for s in FEATURE_SERVICES}
    assert services["churn_model"] == {"name": "churn_model", "description": churn_model.description,
                                       "features": list(churn_model.features), "owners": ["team:growth"]}


def test_feature_views(client):
    response = client.get("/feature-views")
    assert response.status == 200
    views = {v["name"]: v for v in response.json["feature_views"]}
    assert set(views) == {"customer_orders", "product_sales", "customer_profile", "product_inventory"}
    orders = views["customer_orders"]
    assert (orders["entity"], orders["join_key"], orders["ttl_seconds"]) == ("customer", "customer_id", 172800)
    assert orders["owners"] == ["team:growth"] and orders["tags"] == {"domain": "customers"}
    features = {f["name"]: f for f in orders["features"]}
    assert [f["name"] for f in orders["features"]] == customer_orders.feature_names
    assert features["total_spend_30d"]["dtype"] == "decimal(38,2)"
    assert features["total_spend_30d"]["kind"] == "aggregation"
    assert features["total_spend_30d"]["description"].startswith("Sum of quantity")
    assert (features["days_since_last_order"]["dtype"], features["days_since_last_order"]["kind"]) == ("int", "on_demand")
    assert (features["is_high_value"]["dtype"], features["is_high_value"]["kind"]) == ("bool", "derived")
    profile = {f["name"]: f for f in views["customer_profile"]["features"]}
    assert (profile["email"]["dtype"], profile["email"]["kind"]) == ("string", "feature")
    assert views["customer_profile"]["ttl_seconds"] == 7 * 86400


# -- health, faults and the schema ---------------------------------------------------------------

def test_health_ok(client):
    response = client.get("/health")
    assert (response.status, response.json) == (200, {"status": "ok"})


def test_redis_unreachable(tmp_path):
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    with running(create_app(make_store(tmp_path, url))) as down:
        health = down.get("/health")
        assert health.status == 503
        assert health.json["status"] == "unavailable"
        assert "***" in health.json["reason"] and "unreachable" in health.json["reason"]
        read = down.post({"feature_service": "churn_model", "entities": {"customer_id": [1001]}})
        assert_error(read, 503, "unavailable")
        for response in (health, read):
            assert SECRET not in response.text


def test_redis_goes_away_after_connecting(tmp_path):
    """A client that connected once, whose server is gone: PING and reads fail with 503."""
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    store = make_store(tmp_path, url)
    store._online = RedisOnlineStore(redis.Redis.from_url(url, socket_connect_timeout=2), PROJECT)
    with running(create_app(store)) as down:
        health = down.get("/health")
        assert health.status == 503 and health.json["status"] == "unavailable"
        read = down.post({"features": ["customer_orders:order_count_30d"], "entities": {"customer_id": [1001]}})
        assert_error(read, 503, "unavailable")
        for response in (health, read):
            assert SECRET not in response.text


def test_server_fault_is_500_without_details(store, tmp_path):
    def explode(values, request_time):
        raise RuntimeError(f"cannot reach redis://:{SECRET}@db")

    broken = dataclasses.replace(customer_orders, on_demand=[
        OnDemandFeature("exploding", explode, INT, inputs=("last_order_date",))])
    with running(create_app(make_store(tmp_path, registry=Registry.of([broken])))) as faulty:
        response = faulty.post({"features": ["customer_orders:exploding"], "entities": {"customer_id": [1001]}})
        assert_error(response, 500, "internal server error")
        assert SECRET not in response.text


def test_openapi(client):
    response = client.get("/openapi.json")
    assert response.status == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/get-online-features", "/feature-services", "/feature-views", "/health",
                                      "/openapi.json"}
    assert "post" in document["paths"]["/get-online-features"]
    assert "requestBody" in document["paths"]["/get-online-features"]["post"]
    for path in ("/feature-services", "/feature-views", "/health"):
        assert "get" in document["paths"][path]
    assert document == openapi_document()
    references = json.dumps(document)
    for name in document["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in references or name == "OnlineFeaturesRequest"


def test_serve_defaults_to_loopback(monkeypatch, store):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    server_module.serve(store=store)
    assert calls and calls[0][1]["host"] == "127.0.0.1" and calls[0][1]["port"] == 6566
    assert "/get-online-features" in {route.path for route in calls[0][0].routes}
