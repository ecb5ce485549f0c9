"""The raw ceilings, hand-written with the same libraries our platform uses underneath.

    ceilings.py asof MANIFEST OUT.parquet           DuckDB's own ASOF JOIN over the same files (ttl applied)
    ceilings.py redis-read MANIFEST ITERATIONS      redis-py GET (1 key) / MGET (100 keys) of our own keys, and
                                                    HGETALL / pipelined HGETALLs of the same rows as hashes
    ceilings.py cdc-sql CHANGE_LOG OUT.parquet      workload B's feature history in one DuckDB SQL query
    ceilings.py redis-benchmark MANIFEST            redis-benchmark: SET of a value the size of ours, and HSET of 11
                                                    fields per key (the hash layout's write), pipelined

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ours import REDIS_URL, PeakRss  # noqa: E402
from latency import WARMUP, figures  # noqa: E402


def asof(manifest: dict, out: str) -> dict:
    entity_df = pd.read_parquet(manifest["entity_df"])
    values = ", ".join(f'CASE WHEN h.valid_from >= e.event_timestamp - INTERVAL {manifest["ttl_seconds"]} SECOND '
                       f'THEN h."{name}" END AS "{name}"' for name in manifest["features"])
    with PeakRss() as rss:
        began = time.perf_counter()
        connection = duckdb.connect()
        connection.register("entity_rows", entity_df)
        frame = connection.sql(f"""
            SELECT e.row_id, e.customer_id, e.event_timestamp, {values}
            FROM entity_rows e ASOF LEFT JOIN read_parquet('{manifest["history_glob"]}') h
              ON e.customer_id = h.customer_id AND e.event_timestamp >= h.valid_from
            ORDER BY e.row_id
        """).to_arrow_table()  # the joined table itself: no conversion to pandas counted
        connection.close()
        seconds = time.perf_counter() - began
    frame.to_pandas().to_parquet(out)
    return {"seconds": seconds, "rows": frame.num_rows, "peak_rss_mb": rss.mb}


def hash_copies(client, manifest: dict) -> str:
    """The same rows as hashes of 11 fields (``_valid_from`` and f0..f9) under another prefix,
    written once: what a raw client reads with HGETALL in a hash-per-entity layout (Feast's,
    and ours before the packed row)."""
    prefix = f"benchhash:{manifest['view']}:{manifest['size']['customers']}:"
    marker = f"{prefix}_complete"
    if client.exists(marker):
        return prefix
    ours = f"fp:{manifest['project']}:{manifest['view']}:"
    ids = list(range(1, manifest["size"]["customers"] + 1))
    for i in range(0, len(ids), 5000):
        chunk = ids[i:i + 5000]
        pipeline = client.pipeline(transaction=False)
        for entity, row in zip(chunk, client.mget([f"{ours}{e}" for e in chunk])):
            fields = row.split(b"\x1f")  # valid_from, layout, null mask, f0..f9 (none null here)
            pipeline.hset(f"{prefix}{entity}", mapping={"_valid_from": fields[0],
                                                        **{f"f{j}": value for j, value in enumerate(fields[3:])}})
        pipeline.execute()
    client.set(marker, "1")
    return prefix


def redis_read(manifest: dict, iterations: int) -> dict:
    """Raw redis-py, two ways, on the same entities: GET / MGET of our own keys (the fewest
    commands that fetch them, without the view's meta or any decoding), and HGETALL / a
    pipeline of HGETALLs of the same rows kept as hashes (the issue's named ceiling)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"fp:{manifest['project']}:{manifest['view']}:"
    hashes = hash_copies(client, manifest)
    customers = manifest["size"]["customers"]
    rng = np.random.default_rng(1)
    result = {}

    def hgetall(keys):
        if len(keys) == 1:
            return [client.hgetall(keys[0])]
        pipeline = client.pipeline(transaction=False)
        for key in keys:
            pipeline.hgetall(key)
        return pipeline.execute()

    for batch in (1, 100):
        latencies: dict[str, list] = {"get": [], "hgetall": []}
        for i in range(iterations + WARMUP):
            entities = rng.integers(1, customers + 1, size=batch)
            for name, read, keys in (("get", lambda k: [client.get(k[0])] if len(k) == 1 else client.mget(k),
                                      [f"{prefix}{e}" for e in entities]),
                                     ("hgetall", hgetall, [f"{hashes}{e}" for e in entities])):
                began = time.perf_counter()
                answer = read(keys)
                elapsed = time.perf_counter() - began
                assert answer[0], f"no values in Redis under {keys[0]}: was the sync run?"
                if i >= WARMUP:
                    latencies[name].append(elapsed)
        result.update(figures(batch, latencies["get"]))
        result.update(figures(batch, latencies["hgetall"], suffix="_hgetall"))
    return result


def redis_benchmark(manifest: dict) -> dict:
    """The server's own write throughput, pipelined 64 deep, into keys the run then deletes:
    SET of a value as long as one of our packed rows (the same command shape as our write,
    without the compare), and HSET of 11 fields (what a row costs in a hash-per-entity layout)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    entities = manifest["size"]["customers"]
    # One of our rows, as the online-sync benchmark just wrote it (separators shown as '|').
    sample = client.get(f"fp:{manifest['project']}:{manifest['view']}:1")
    assert sample, "no row of ours in Redis: run the online sync first"
    value = sample.decode().replace("\x1f", "|")
    url = redis.connection.parse_url(REDIS_URL)
    base = ["redis-benchmark", "-h", url.get("host", "127.0.0.1"), "-p", str(url.get("port", 6379)),
            "--dbnum", str(url.get("db", 0)), "-n", str(entities), "-r", str(entities), "-P", "64", "-q", "--csv"]
    fields = " ".join(f"f{i} 100.123456" for i in range(10)) + " _valid_from 1772323200000000"
    rates = {}
    for name, command in (("set", ["SET", "benchceil:__rand_int__", value]),
                          ("hset", f"HSET benchceil:__rand_int__ {fields}".split())):
        output = subprocess.run(base + command, capture_output=True, text=True, check=True).stdout
        rates[name] = float(re.findall(r'"([0-9.]+)"', output.strip().splitlines()[-1])[0])
        keys = list(client.scan_iter(match="benchceil:*", count=5000))
        for i in range(0, len(keys), 5000):
            client.delete(*keys[i:i + 5000])
    return {"entities_per_s": rates["set"], "hset_entities_per_s": rates["hset"], "value_bytes": len(value),
            "command": " ".join(base[:12]) + f" SET key <{len(value)} bytes> | HSET key <11 fields>"}


# Workload B in SQL: the same row versions, window memberships and signed sweep as the
# engines (docs/semantics.md), then the same "drop a row equal to the previous one in the
# same hour". Money stays in exact integers (cents) until the mean's one division.
CDC_SQL = """
WITH changes AS (
    SELECT *, epoch_us(_commit_time) AS commit_us,
           CASE _op WHEN 'd' THEN 0 WHEN 't' THEN 1 WHEN 'r' THEN 2 WHEN 'c' THEN 3 ELSE 4 END AS op_rank
    FROM read_parquet('{change_log}') WHERE _op <> 't'
), versions AS (
    SELECT purchaser::BIGINT AS entity, _op, commit_us AS known_from,
           coalesce(lead(commit_us) OVER (PARTITION BY _pk ORDER BY _lsn, op_rank), {no_end}) AS known_to,
           epoch_us(order_date) AS event_us,
           quantity::BIGINT * (unit_price * 100)::BIGINT AS cents
    FROM changes
), members AS (
    SELECT entity, greatest(known_from, event_us) AS s, least(known_to, event_us + {window}) AS e, cents
    FROM versions
    WHERE _op IN ('r', 'c', 'u') AND event_us IS NOT NULL AND entity IS NOT NULL
      AND greatest(known_from, event_us) < least(known_to, event_us + {window})
), events AS (
    SELECT entity, s AS t, 1 AS sign, cents FROM members
    UNION ALL
    SELECT entity, e AS t, -1 AS sign, -cents FROM members WHERE e <> {no_end}
), per_instant AS (
    SELECT entity, t, sum(sign) AS d_count, sum(cents)::HUGEINT AS d_cents FROM events GROUP BY entity, t
), running AS (
    SELECT entity, t,
           sum(d_count) OVER w AS order_count_30d,
           sum(d_cents) OVER w AS cents_30d
    FROM per_instant
    WINDOW w AS (PARTITION BY entity ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), valued AS (
    SELECT entity, t, order_count_30d::BIGINT AS order_count_30d, cents_30d::BIGINT AS cents_30d,
           CASE WHEN order_count_30d > 0 THEN cents_30d::DOUBLE / (order_count_30d * 100)::DOUBLE END
               AS avg_order_value_30d
    FROM running WHERE t < {end}
), compared AS (
    SELECT *,
           lag(t) OVER p AS previous_t,
           lag(order_count_30d) OVER p AS previous_count,
           lag(cents_30d) OVER p AS previous_cents,
           lag(avg_order_value_30d) OVER p AS previous_avg
    FROM valued WINDOW p AS (PARTITION BY entity ORDER BY t)
)
SELECT entity AS customer_id, make_timestamp(t) AS valid_from, order_count_30d,
       cents_30d, avg_order_value_30d
FROM compared
WHERE NOT (previous_t IS NOT NULL AND previous_t // 3600000000 = t // 3600000000
           AND order_count_30d = previous_count AND cents_30d = previous_cents
           AND avg_order_value_30d IS NOT DISTINCT FROM previous_avg)
"""


def cdc_sql(change_log: str, out: str) -> dict:
    from datetime import timedelta

    import workloads

    query = CDC_SQL.format(change_log=change_log.replace("'", "''"), no_end=np.iinfo(np.int64).max,
                           window=30 * 86_400_000_000,
                           end=int((workloads.START + timedelta(days=200)).timestamp() * 1_000_000))
    with PeakRss() as rss:
        began = time.perf_counter()
        connection = duckdb.connect()
        table = connection.sql(query).to_arrow_table()
        connection.close()
        seconds = time.perf_counter() - began
    import pyarrow.parquet as pq
    pq.write_table(table, out)
    return {"seconds": seconds, "rows": table.num_rows, "peak_rss_mb": rss.mb}


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "asof":
        outcome = asof(json.loads(Path(sys.argv[2]).read_text()), sys.argv[3])
    elif command == "redis-read":
        outcome = redis_read(json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3]))
    elif command == "cdc-sql":
        outcome = cdc_sql(sys.argv[2], sys.argv[3])
    elif command == "redis-benchmark":
        outcome = redis_benchmark(json.loads(Path(sys.argv[2]).read_text()))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(outcome))
