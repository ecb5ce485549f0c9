"""The figures every online-read side reports (ours, raw redis-py, Feast), made one way.

Only numpy: Feast's side imports this from its own venv (bench/peers/.venv-feast).
"""

import numpy as np

WARMUP = 20  # calls of each batch size not counted: the first ones warm connections and caches


def figures(batch: int, latencies: list[float], suffix: str = "") -> dict:
    """p50 and p99 in ms of one batch size's timed calls, and every latency for bench/harness.py
    to pool across rounds."""
    return {f"ms_{batch}{suffix}": [round(x * 1000, 4) for x in latencies],
            f"p50_ms_{batch}{suffix}": float(np.percentile(latencies, 50) * 1000),
            f"p99_ms_{batch}{suffix}": float(np.percentile(latencies, 99) * 1000)}
