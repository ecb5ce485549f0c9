"""Named pause points, so a fault-injection test can stop a real run at an exact moment.

Killing a run "while it writes a partition" by timing alone is a race the test loses on a
fast or slow machine. Instead the code calls :func:`pause_point` at the moments that
matter, and a test that sets two environment variables makes the run stop there::

    FP_FAULT_PAUSE_AT=offline-write:features/customer_orders/   # <point>[:<substring of detail>]
    FP_FAULT_DIR=/tmp/some-dir                                  # where the run signals and waits

The first time the run reaches that point it writes ``<dir>/<point>.reached`` (its pid and
the detail) and waits until ``<dir>/<point>.release`` exists (at most ten minutes): the test
can now ``kill -9`` it, stop a service under it, or read the stores while it stands still.
Without ``FP_FAULT_PAUSE_AT`` (every real deployment) a pause point is one dictionary lookup.

Points (see the callers):

* ``offline-write`` — ``Store.write_bytes`` has written the complete temporary file and has
  not yet renamed it over the final name; detail: the final path.
* ``online-sync`` — an ``online/<view>`` step has connected to Redis and is about to write;
  detail: ``<view>:before-write``; and again with ``<view>:written`` once every entity's row
  is in Redis but ``synced_through`` has not moved yet.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

PAUSE_AT_ENV = "FP_FAULT_PAUSE_AT"
DIRECTORY_ENV = "FP_FAULT_DIR"
MAX_PAUSE_SECONDS = 600.0


def pause_point(name: str, detail: str = "") -> None:
    """Stand still here if a test asked for it (see the module docstring); otherwise return."""
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted:
        return
    point, _, fragment = wanted.partition(":")
    if point != name or fragment not in detail:
        return
    directory = Path(os.environ.get(DIRECTORY_ENV) or ".")
    try:
        # O_EXCL: only the first process and the first time reach the pause.
        fd = os.open(directory / f"{name}.reached", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "detail": detail}))
    release = directory / f"{name}.release"
    deadline = time.monotonic() + MAX_PAUSE_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
