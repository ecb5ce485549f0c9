"""Settings read from the environment, with defaults for the embedded, one-machine setup.

Every setting has one name (``FP_*``) that is documented in the README; nothing else in
the platform reads the environment directly, so this file is the whole configuration story.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_PARTITIONS_START = "2026-01-01T00:00:00+00:00"


def _parse_start(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(
            f"FP_PARTITIONS_START={text!r} is not an ISO-8601 timestamp (e.g. 2026-01-01T00:00:00Z)"
        ) from error
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    if value.minute or value.second or value.microsecond:
        raise ValueError(f"FP_PARTITIONS_START={text!r} must fall on a whole hour")
    return value


@dataclass(frozen=True)
class Settings:
    landing_uri: str
    offline_uri: str
    redis_url: str | None
    project: str
    partitions_start: datetime

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("FP_DATA_DIR", ".data")).absolute()
        project = env.get("FP_PROJECT", "demo")
        if not project.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"FP_PROJECT={project!r} may hold only letters, digits, '-' and '_'")
        return cls(
            landing_uri=env.get("FP_LANDING_URI", str(data_dir / "landing")),
            offline_uri=env.get("FP_OFFLINE_URI", str(data_dir / "offline")),
            redis_url=env.get("FP_REDIS_URL") or None,
            project=project,
            partitions_start=_parse_start(env.get("FP_PARTITIONS_START", DEFAULT_PARTITIONS_START)),
        )

    @property
    def project_offline_root(self) -> str:
        """Every offline path of this deployment lives under its project name."""
        return f"{self.offline_uri.rstrip('/')}/{self.project}"
