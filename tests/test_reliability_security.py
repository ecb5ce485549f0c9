"""Security: paths that escape the landing root are refused; the real feature server process
bounds request size and entity count and answers malformed JSON with 4xx; Redis AUTH and TLS
(``rediss://`` to a TLS-only redis-server with a CA generated here) work end to end, and the
password appears in no answer, log line or error. (tests/test_reliability_faults.py greps a
whole Dagster pipeline run for it; tests/test_change_log.py covers symlinks in depth.)
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote

import pytest

from assets.sources import orders
from conftest import ORDERS_DIR, dumps, load_bench_script, ms, order_message, order_row
from feature_platform.cdc.change_log import ChangeLog
from feature_platform.cdc.landing import LandingFile, read_landing_file
from feature_platform.redis_client import OnlineStoreUnavailable, connect, redact
from feature_platform.storage import Store, UnsafePathError
from redis_servers import make_tls_files, start_server
from reliability import START

PASSWORD = "tls-and-auth:p@ss/word%"


def post(port: int, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", "/get-online-features", body=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


# -- the landing root ------------------------------------------------------------------------

@pytest.mark.parametrize("relative", ["../outside.json", "topics/../../outside.json", "/etc/passwd",
                                      "a/b/../../../outside.json", ".."])
def test_paths_that_leave_the_landing_root_are_refused(tmp_path, relative):
    landing = Store(str(tmp_path / "landing"))
    with pytest.raises(UnsafePathError, match="leaves the root"):
        landing.full_path(relative)


def test_a_dot_dot_landing_path_is_quarantined_never_read(stores, tmp_path):
    """An object store can list a key with '..' in it: staging quarantines it, reading nothing outside."""
    outside = tmp_path / f"{orders.topic}+0+0000000001.json"
    outside.write_text(dumps(order_message("c", lsn=1, commit_ms=ms(START), tx_id=1, after=order_row(66))) + "\n")
    escaping = LandingFile(path=f"{ORDERS_DIR}/../../../{outside.name}", topic=orders.topic, kind="values",
                           size=outside.stat().st_size, mtime_ns=outside.stat().st_mtime_ns)
    [outcome] = read_landing_file(stores.landing, escaping, orders)
    assert outcome.decoded is None and "leaves the root" in outcome.reason
    staged = ChangeLog(stores.offline, orders)._stage_outcomes(escaping, [outcome])
    assert (staged.account.changes, staged.account.quarantined) == (0, 1)


# -- the feature server process, over TLS and AUTH ---------------------------------------------

@pytest.fixture
def tls_redis(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    with start_server(password=PASSWORD, tls=tls) as server:
        yield server


def test_rediss_with_the_generated_ca_works_and_every_misconfiguration_is_a_clear_redacted_error(tls_redis):
    url = tls_redis.url
    client = connect(url)
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == tls_redis.tls.ca_file
    assert client.set("fp:tls-check", b"1") and client.get("fp:tls-check") == b"1"
    client.delete("fp:tls-check")
    client.close()

    without_ca = url.split("?")[0]
    wrong_scheme = url.replace("rediss://", "redis://", 1)
    plain_on_tls_port = without_ca.replace("rediss://", "redis://", 1)
    wrong_password = tls_redis.url_for(0, password="not-it")
    missing_ca = url.replace("ssl_ca_certs=", "ssl_ca_certs=/nonexistent")
    cases = {without_ca: "CERTIFICATE_VERIFY_FAILED", wrong_scheme: "TLS options need a rediss:// URL",
             plain_on_tls_port: "unreachable", wrong_password: "refused the credentials",
             missing_ca: "is not a readable file"}
    for bad_url, expected in cases.items():
        with pytest.raises(OnlineStoreUnavailable) as refused:
            connect(bad_url, socket_timeout=3)
        message = str(refused.value)
        assert expected in message and redact(bad_url).split("?")[0] in message, message
        assert PASSWORD not in message and quote(PASSWORD, safe="") not in message, message


@pytest.mark.timeout(120)
def test_feature_server_over_tls_bounds_requests_and_never_shows_the_password(tls_redis, tmp_path):
    bench = load_bench_script("load_server")
    project = "sec"
    bench.populate(tls_redis.url, project, customers=30)
    log = tmp_path / "serve.log"
    with bench.feature_server(tls_redis.url, project, max_entities=25, log=log) as port:
        ok = json.dumps({"feature_service": "churn_model", "entities": {"customer_id": [1, 2, 3]}}).encode()
        status, answer = post(port, ok)
        assert status == 200 and answer["results"][0]["values"] == [1, 2, 3]
        assert all(s == "PRESENT" for s in answer["results"][1]["statuses"]), answer  # values read over TLS

        status, answer = post(port, json.dumps({"feature_service": "churn_model",
                                                "entities": {"customer_id": list(range(1, 27))}}).encode())
        assert status == 413 and "26 entities" in answer["error"] and "25" in answer["error"]
        big = json.dumps({"feature_service": "churn_model", "entities": {"customer_id": [1]},
                          "pad": "x" * 1_100_000}).encode()
        status, answer = post(port, big)
        assert status == 413 and "limit of 1048576 bytes" in answer["error"], answer  # the default, 1 MiB
        # A Content-Length far over the limit is refused before the body is read (nothing is sent).
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/get-online-features")
        connection.putheader("Content-Length", str(10**10))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413, response.read()
        connection.close()
        for malformed in (b'{"feature_service": "churn_model", "entities": {', b"\xff\xfe\x00", b"[]",
                          b'{"entities": {"customer_id": [1]}}', b"nul"):
            status, answer = post(port, malformed)
            assert 400 <= status < 500 and answer["error"], (malformed, status, answer)

        # Redis goes away: 503 naming the redacted URL, never the password.
        tls_redis.stop()
        status, answer = post(port, ok)
        assert status == 503 and redact(tls_redis.url) in answer["error"], answer
        assert PASSWORD not in json.dumps(answer) and quote(PASSWORD, safe="") not in json.dumps(answer)
    text = log.read_text(errors="replace")
    assert PASSWORD not in text and quote(PASSWORD, safe="") not in text
