"""Connecting to Redis from ``FP_REDIS_URL``: a single server or a Redis Cluster, with AUTH and TLS.

``redis://[:password@]host:port/db``, ``rediss://`` for TLS (``?ssl_cert_reqs=required&ssl_ca_certs=<CA PEM>``,
plus ``ssl_certfile``/``ssl_keyfile`` for a client certificate), and
``?cluster=true`` (or a server that reports ``cluster_enabled:1``) for Redis Cluster, through
redis-py's cluster client. The password never leaves this module: ``redact()`` is what logs,
errors and metadata show.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import redis
from redis.cluster import RedisCluster


class OnlineStoreUnavailable(RuntimeError):
    """Redis cannot be reached or refuses us; the message never contains the password."""


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[1]
    user = parsed.username or ""
    return urlunparse(parsed._replace(netloc=f"{user}:***@{netloc}"))


def scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` from any text (an exception message, say)."""
    password = urlparse(url).password
    return text.replace(password, "***") if password else text


def connect(url: str, *, socket_timeout: float = 5.0) -> redis.Redis | RedisCluster:
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    wants_cluster = query.pop("cluster", ["false"])[0].lower() in ("1", "true", "yes")
    clean_url = urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
    options = dict(socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, decode_responses=False)
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        for path in query.get(name, []):
            if not os.path.isfile(path):
                raise OnlineStoreUnavailable(f"Redis URL {redact(url)}: {name}={path} is not a readable file")
    try:
        if wants_cluster:
            client = RedisCluster.from_url(clean_url, **options)
        else:
            client = redis.Redis.from_url(clean_url, **options)
            if client.info("cluster").get("cluster_enabled"):
                client.close()
                client = RedisCluster.from_url(clean_url, **options)
        client.ping()
        return client
    except (TypeError, ValueError) as error:
        # redis-py refuses an option that does not fit the scheme (ssl_* on redis://, say) with a
        # bare TypeError from deep in its connection pool: say which URL and what to do.
        hint = " (TLS options need a rediss:// URL)" if "ssl" in str(error) and parsed.scheme == "redis" else ""
        raise OnlineStoreUnavailable(f"Redis URL {redact(url)} is not valid{hint}: {scrub(str(error), url)}") from None
    except redis.AuthenticationError as error:
        raise OnlineStoreUnavailable(f"Redis at {redact(url)} refused the credentials: "
                                     f"{scrub(str(error), url)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        raise OnlineStoreUnavailable(f"Redis at {redact(url)} is unreachable: {scrub(str(error), url)}") from None
    except redis.ResponseError as error:
        message = scrub(str(error), url)
        if re.search(r"NOAUTH|WRONGPASS|invalid password", message, re.IGNORECASE):
            raise OnlineStoreUnavailable(f"Redis at {redact(url)} refused the credentials: {message}") from None
        raise OnlineStoreUnavailable(f"Redis at {redact(url)} answered an error: {message}") from None
