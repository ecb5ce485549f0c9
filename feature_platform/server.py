"""The online feature server: Feast's HTTP API over the platform's Redis online store.

    feature-platform serve --host 127.0.0.1 --port 6566

``POST /get-online-features`` takes Feast's request::

    {"features": ["customer_orders:total_spend_30d", ...] | "feature_service": "churn_model",
     "entities": {"customer_id": [1001, 1002]}, "full_feature_names": false,
     "request_time": "2026-03-01T12:00:00Z"}          # optional: replay a past moment

and answers Feast's response, one result per column (the join keys first), each with one
value, status and event timestamp per entity, plus the views that were served as stale::

    {"metadata": {"feature_names": ["customer_id", "total_spend_30d"]},
     "results": [{"values": [1001, 1002], "statuses": ["PRESENT", "PRESENT"],
                  "event_timestamps": ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]},
                 {"values": [1250.5, null], "statuses": ["PRESENT", "NOT_FOUND"],
                  "event_timestamps": ["2026-03-01T11:00:00Z", "1970-01-01T00:00:00Z"]}],
     "stale_views": []}

A status is ``PRESENT`` for a value, ``NOT_FOUND`` for a null, and ``OUTSIDE_MAX_AGE`` for
every value of a view whose synced-through time is older than its TTL at the request time
(served as null, as the SDK does). An event timestamp is the entity row's valid-from time
in the online store (the epoch when there is no row, and for join keys, as in Feast).
Decimal features are JSON numbers, timestamps ISO-8601 strings in UTC.

Also ``GET /feature-services``, ``GET /feature-views``, ``GET /health`` and
``GET /openapi.json``. Every error is JSON ``{"error": "..."}``: 400 for a malformed
request, 404 for an unknown feature, view or service name, 413 for a body over
``max_body_bytes`` or more than ``max_entities`` entities, 503 when Redis cannot be
reached, 500 (with no detail) for anything else. Nothing sent back ever holds the Redis
password.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from feature_platform.config import (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ENTITIES, DEFAULT_SERVER_HOST,
                                     DEFAULT_SERVER_PORT)
from feature_platform.feature_store import FeatureStore
from feature_platform.feature_view import FeatureView
from feature_platform.online_store import from_micros
from feature_platform.redis_client import OnlineStoreUnavailable, redact, scrub
from feature_platform.registry import UnknownFeatureError

logger = logging.getLogger(__name__)

EPOCH_TEXT = "1970-01-01T00:00:00Z"
PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE = "PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# -- the request ---------------------------------------------------------------------------------

async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(f"Content-Length {declared!r} is not a number") from None
        if length > limit:
            raise RequestError(f"the request body has {length} bytes, over the server's limit of {limit} bytes "
                               "(feature-platform serve --max-body-bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body is over the server's limit of {limit} bytes "
                               "(feature-platform serve --max-body-bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_time(value) -> datetime:
    if not isinstance(value, str):
        raise RequestError(f"request_time must be an ISO-8601 string, not {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RequestError(f"request_time {value!r} is not an ISO-8601 time (e.g. 2026-03-01T12:00:00Z)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


@dataclasses.dataclass
class _Query:
    references: list[str]
    service: str | None
    entities: dict[str, list]
    full_feature_names: bool
    request_time: datetime | None


def _parse_query(body: bytes) -> _Query:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be a JSON object, not {_json_type(payload)}")
    features, service = payload.get("features"), payload.get("feature_service")
    if (features is None) == (service is None):
        raise RequestError('pass exactly one of "features": ["view:feature", ...] or "feature_service": "name"')
    if features is not None:
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise RequestError('"features" must be a list of "view:feature" strings')
        if not features:
            raise RequestError('"features" is empty')
    if service is not None and not isinstance(service, str):
        raise RequestError(f'"feature_service" must be a string, not {_json_type(service)}')
    entities = payload.get("entities")
    if not isinstance(entities, dict):
        raise RequestError('"entities" must be an object of join key → list of values, e.g. '
                           '{"customer_id": [1001, 1002]}')
    for key, values in entities.items():
        if not isinstance(values, list):
            raise RequestError(f'entities["{key}"] must be a list of values, not {_json_type(values)}')
    full_feature_names = payload.get("full_feature_names", False)
    if not isinstance(full_feature_names, bool):
        raise RequestError(f'"full_feature_names" must be true or false, not {_json_type(full_feature_names)}')
    request_time = payload.get("request_time")
    return _Query(list(features) if features is not None else [], service, entities, full_feature_names,
                  None if request_time is None else _parse_time(request_time))


# -- reading -------------------------------------------------------------------------------------

class _CapturingOnline:
    """The store's online store, keeping what ``read_rows`` answered (for event timestamps)."""

    def __init__(self, online):
        self._online = online
        self.captured: tuple[list, list] | None = None

    def read_rows(self, requests):
        answers = self._online.read_rows(requests)
        self.captured = (requests, answers)
        return answers

    def __getattr__(self, name):
        return getattr(self._online, name)


def _valid_from_by_view(captured) -> dict[str, dict]:
    """{view name: {entity key: valid-from datetime of a live row}} from one ``read_rows`` call."""
    if captured is None:
        return {}
    found: dict[str, dict] = {}
    for (view, keys, _needed), answer in zip(*captured):
        moments = found.setdefault(view.name, {})
        for key, row in zip(keys, answer.rows):
            if row is not None and row.values is not None:
                moments[key] = from_micros(row.valid_from)
    return found


def _iso(moment) -> str:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat().replace("+00:00", "Z")


def _json_value(value):
    """One value as JSON: int, float, bool, str, ISO-8601 string, or null (NaN and ±inf too)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating, Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, (datetime, pd.Timestamp, np.datetime64)):
        return _iso(value)
    return str(value)


# -- the app -------------------------------------------------------------------------------------

def create_app(store: FeatureStore, max_entities: int = DEFAULT_MAX_ENTITIES,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The feature server's Starlette app over ``store`` (its registry and its Redis)."""
    registry = store.registry
    key_is_int = {}  # join key → whether its values are integers (else strings)
    for view in registry.views.values():
        field = view.history_schema().field(view.entity.join_key)
        key_is_int.setdefault(view.entity.join_key, set()).add(pa.types.is_integer(field.type))

    def redis_url() -> str:
        return getattr(getattr(store, "settings", None), "redis_url", None) or ""

    def unavailable_reason(error: Exception) -> str:
        url = redis_url()
        message = scrub(str(error), url) if url else str(error)
        if url and redact(url) not in message:
            message = f"Redis at {redact(url)}: {message}"
        return f"the online store is unavailable: {message}"

    def unavailable(error: Exception) -> JSONResponse:
        return _error(unavailable_reason(error), 503)

    def plan(query: _Query) -> tuple[list[tuple[FeatureView, str]], list[str], list[dict]]:
        if query.service is not None:
            requested = registry.resolve(registry.service(query.service).features)
        else:
            requested = registry.resolve(query.references)
        join_keys = list(dict.fromkeys(view.entity.join_key for view, _ in requested))
        columns = [f"{view.name}__{feature}" if query.full_feature_names else feature for view, feature in requested]
        seen = set(join_keys)
        for column in columns:
            if column in seen:
                raise RequestError(f"two requested columns are both named {column!r}; request each feature "
                                   "once, or pass \"full_feature_names\": true")
            seen.add(column)
        for key in join_keys:
            if key not in query.entities:
                needing = sorted({view.name for view, _ in requested if view.entity.join_key == key})
                raise RequestError(f'"entities" lacks the join key {key!r} (needed by {", ".join(needing)})')
        lengths = {key: len(values) for key, values in query.entities.items()}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{key} has {length}" for key, length in lengths.items())
            raise RequestError(f"the entity lists differ in length: {described}")
        count = next(iter(lengths.values()), 0)
        if count > max_entities:
            raise RequestError(f"{count} entities requested; the limit is {max_entities} per request", 413)
        for key in join_keys:
            wants_int = key_is_int.get(key, {True, False})
            for position, value in enumerate(query.entities[key]):
                if value is None:
                    raise RequestError(f'entities["{key}"][{position}] is null')
                is_int = isinstance(value, int) and not isinstance(value, bool)
                if not ((is_int and True in wants_int) or (isinstance(value, str) and False in wants_int)):
                    expected = "an integer" if wants_int == {True} else "a string"
                    raise RequestError(f'entities["{key}"][{position}] must be {expected}, not {_json_type(value)}')
        rows = [{key: values[index] for key, values in query.entities.items()} for index in range(count)]
        return requested, join_keys, rows

    def answer(query: _Query) -> dict:
        requested, join_keys, rows = plan(query)
        capture = _CapturingOnline(store.online)
        try:
            reader = dataclasses.replace(store, _online=capture)
        except TypeError:  # not a dataclass: read without event timestamps
            reader, capture = store, None
        found = reader.get_online_features_dict(
            rows, features=None if query.service is not None else query.references, service=query.service,
            full_feature_names=query.full_feature_names, request_time=query.request_time)
        stale = list(found.stale)
        valid_from = _valid_from_by_view(capture.captured if capture is not None else None)
        view_of = {(f"{view.name}__{feature}" if query.full_feature_names else feature): view
                   for view, feature in requested}
        results = []
        for column, column_values in found.items():
            values = [_json_value(v) for v in column_values]
            if column in join_keys or column not in view_of:
                statuses = [PRESENT] * len(values)
                stamps = [EPOCH_TEXT] * len(values)
            else:
                view = view_of[column]
                if view.name in stale:
                    statuses = [OUTSIDE_MAX_AGE] * len(values)
                else:
                    statuses = [PRESENT if v is not None else NOT_FOUND for v in values]
                moments = valid_from.get(view.name, {})
                keys = [row[view.entity.join_key] for row in rows]
                stamps = [_iso(moments[k]) if k in moments else EPOCH_TEXT for k in keys]
            results.append({"values": values, "statuses": statuses, "event_timestamps": stamps})
        return {"metadata": {"feature_names": [str(c) for c in found]}, "results": results,
                "stale_views": stale}

    async def get_online_features(request: Request) -> JSONResponse:
        """Feature values of entities, Feast-style."""
        try:
            query = _parse_query(await _read_body(request, max_body_bytes))
            return JSONResponse(await run_in_threadpool(answer, query))
        except RequestError as error:
            return _error(error.message, error.status)
        except UnknownFeatureError as error:
            return _error(str(error), 404)
        except OnlineStoreUnavailable as error:
            return unavailable(error)
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as error:
            return unavailable(error)
        except Exception:
            logger.exception("get-online-features failed")
            return _error("internal server error: the request failed on the server (see the server log)", 500)

    def feature_services(request: Request) -> JSONResponse:
        return JSONResponse({"feature_services": [
            {"name": s.name, "description": s.description, "features": list(s.features), "owners": list(s.owners)}
            for s in registry.services.values()]})

    def feature_views(request: Request) -> JSONResponse:
        return JSONResponse({"feature_views": [_describe_view(view) for view in registry.views.values()]})

    def health(request: Request) -> JSONResponse:
        try:
            store.online.client.ping()
        except (OnlineStoreUnavailable, RuntimeError, redis.RedisError, OSError) as error:
            return JSONResponse({"status": "unavailable", "reason": unavailable_reason(error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(max_entities, max_body_bytes))

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
        return _error(message, error.status_code, getattr(error, "headers", None))

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return _error("internal server error: the request failed on the server (see the server log)", 500)

    return Starlette(
        routes=[
            Route("/get-online-features", get_online_features, methods=["POST"]),
            Route("/feature-services", feature_services, methods=["GET"]),
            Route("/feature-views", feature_views, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def _describe_view(view: FeatureView) -> dict:
    kinds = {}
    descriptions = {}
    for kind, group in (("aggregation", view.aggregations), ("feature", view.features),
                        ("derived", view.derived), ("on_demand", view.on_demand)):
        for feature in group:
            kinds[feature.name] = kind
            descriptions[feature.name] = feature.description
    ttl = view.ttl.total_seconds()
    return {
        "name": view.name,
        "description": view.description,
        "entity": view.entity.name,
        "join_key": view.entity.join_key,
        "source": view.source.name,
        "features": [{"name": name, "dtype": str(dtype), "kind": kinds[name], "description": descriptions[name]}
                     for name, dtype in view.feature_dtypes().items()],
        "ttl_seconds": int(ttl) if ttl == int(ttl) else ttl,
        "owners": list(view.owners),
        "tags": dict(view.tags),
    }


def openapi_document(max_entities: int = DEFAULT_MAX_ENTITIES,
                     max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> dict:
    """The OpenAPI 3 description of the server."""
    error = {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def ok(schema: str, description: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    scalar = {"nullable": True, "oneOf": [{"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                                          {"type": "string"}]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Feature platform online feature server", "version": "1.0.0",
                 "description": "Feast-compatible online feature retrieval over the Redis online store."},
        "paths": {
            "/get-online-features": {"post": {
                "summary": "Feature values of entities (Feast's request and response shape)",
                "operationId": "getOnlineFeatures",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/OnlineFeaturesRequest"},
                    "example": {"feature_service": "churn_model", "entities": {"customer_id": [1001, 1002]}}}}},
                "responses": {
                    "200": ok("OnlineFeaturesResponse", "One result per column: join keys first, then features"),
                    "400": error, "404": {**error, "description": "Unknown feature, view or service"},
                    "413": {**error, "description": f"Body over {max_body_bytes} bytes or more than "
                                                    f"{max_entities} entities"},
                    "500": error, "503": {**error, "description": "Redis is unreachable"}}}},
            "/feature-services": {"get": {
                "summary": "Every feature service, with its features in order", "operationId": "listFeatureServices",
                "responses": {"200": ok("FeatureServices", "The feature services")}}},
            "/feature-views": {"get": {
                "summary": "Every feature view, with its features, types, TTL, owners and tags",
                "operationId": "listFeatureViews",
                "responses": {"200": ok("FeatureViews", "The feature views")}}},
            "/health": {"get": {
                "summary": "Whether the online store (Redis) answers", "operationId": "health",
                "responses": {"200": ok("Health", "Redis answers PING"),
                              "503": ok("Health", "Redis is unreachable (status unavailable, with a reason)")}}},
            "/openapi.json": {"get": {
                "summary": "This document", "operationId": "openapi",
                "responses": {"200": {"description": "The OpenAPI document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": {
            "OnlineFeaturesRequest": {
                "type": "object", "required": ["entities"],
                "description": "Exactly one of features and feature_service.",
                "properties": {
                    "features": {"type": "array", "items": {"type": "string", "example": "customer_orders:order_count_30d"},
                                 "description": "Feature references view:feature, in the order wanted"},
                    "feature_service": {"type": "string", "description": "A feature service's name"},
                    "entities": {"type": "object", "description": "Join key → values (one per entity, equal lengths)",
                                 "additionalProperties": {"type": "array", "maxItems": max_entities,
                                                          "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
                    "full_feature_names": {"type": "boolean", "default": False,
                                           "description": "Name columns view__feature"},
                    "request_time": {"type": "string", "format": "date-time",
                                     "description": "Read as of this moment (TTL and on-demand features); default now"},
                }},
            "OnlineFeaturesResponse": {
                "type": "object", "required": ["metadata", "results", "stale_views"],
                "properties": {
                    "metadata": {"type": "object", "properties": {
                        "feature_names": {"type": "array", "items": {"type": "string"}}}},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "values": {"type": "array", "items": scalar},
                        "statuses": {"type": "array", "items": {"type": "string",
                                                                "enum": [PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE]}},
                        "event_timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}}}}},
                    "stale_views": {"type": "array", "items": {"type": "string"},
                                    "description": "Views served as null: synced longer ago than their TTL"},
                }},
            "FeatureServices": {"type": "object", "properties": {"feature_services": {"type": "array", "items": {
                "type": "object", "properties": {
                    "name": {"type": "string"}, "description": {"type": "string"},
                    "features": {"type": "array", "items": {"type": "string"}},
                    "owners": {"type": "array", "items": {"type": "string"}}}}}}},
            "FeatureViews": {"type": "object", "properties": {"feature_views": {"type": "array", "items": {
                "type": "object", "properties": {
                    "name": {"type": "string"}, "description": {"type": "string"}, "entity": {"type": "string"},
                    "join_key": {"type": "string"}, "source": {"type": "string"},
                    "features": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "dtype": {"type": "string"},
                        "kind": {"type": "string", "enum": ["aggregation", "feature", "derived", "on_demand"]},
                        "description": {"type": "string"}}}},
                    "ttl_seconds": {"type": "number"},
                    "owners": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
            "Health": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]}, "reason": {"type": "string"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        }},
    }


def serve(host: str = DEFAULT_SERVER_HOST, port: int = DEFAULT_SERVER_PORT, store: FeatureStore | None = None, *,
          max_entities: int = DEFAULT_MAX_ENTITIES, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          log_level: str = "info") -> None:
    """Run the feature server with uvicorn until interrupted (loopback only by default)."""
    import uvicorn

    app = create_app(store or FeatureStore.from_env(), max_entities=max_entities, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
