"""Settings read from the environment, with defaults for the embedded, one-machine setup.

Every setting has one name (``FP_*``) that is documented in the README; nothing else in
the platform reads the environment directly, so this file is the whole configuration story.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_PARTITIONS_START = "2026-01-01T00:00:00+00:00"
DEFAULT_SPARK_MASTER = "local[2]"
DEFAULT_S3_REGION = "us-east-1"

# The HTTP feature server's defaults (`feature-platform serve` options): here rather than in
# server.py, so the command line shows them without importing the server (Starlette).
DEFAULT_SERVER_HOST = "127.0.0.1"
DEFAULT_SERVER_PORT = 6566  # Feast's feature server port
DEFAULT_MAX_ENTITIES = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a request for the most entities, with long string keys, fits


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


def parse_spark_conf(text: str) -> dict[str, str]:
    """``FP_SPARK_CONF``: a JSON object, or ``key=value`` pairs separated by commas or newlines."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"FP_SPARK_CONF is not valid JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise ValueError("FP_SPARK_CONF must be a JSON object of Spark settings")
        return {str(key): str(value) for key, value in parsed.items()}
    conf = {}
    for item in text.replace("\n", ",").split(","):
        if not item.strip():
            continue
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"FP_SPARK_CONF item {item.strip()!r} is not key=value (e.g. spark.executor.memory=1g)")
        conf[key.strip()] = value.strip()
    return conf


@dataclass(frozen=True)
class S3Options:
    """How to reach ``s3://`` URIs: an S3-compatible endpoint (MinIO, Ceph...) or AWS itself.

    Credentials are not settings of the platform: the AWS SDK's own chain finds them
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``~/.aws``, an
    instance or pod role), the same way for pyarrow (reading, writing) and boto3 (listing).
    """

    endpoint_url: str | None  # FP_S3_ENDPOINT_URL, e.g. http://minio:9000; None: AWS
    region: str  # AWS_REGION / AWS_DEFAULT_REGION; the default avoids a metadata-service lookup

    @classmethod
    def from_env(cls, environ=None) -> "S3Options":
        env = os.environ if environ is None else environ
        endpoint = env.get("FP_S3_ENDPOINT_URL") or None
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"FP_S3_ENDPOINT_URL={endpoint!r} must start with http:// or https://")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_S3_REGION
        return cls(endpoint_url=endpoint.rstrip("/") if endpoint else None, region=region)


@dataclass(frozen=True)
class Settings:
    landing_uri: str
    offline_uri: str
    redis_url: str | None
    project: str
    partitions_start: datetime
    spark_master: str = DEFAULT_SPARK_MASTER
    spark_conf: dict[str, str] = field(default_factory=dict)

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
            spark_master=env.get("FP_SPARK_MASTER") or DEFAULT_SPARK_MASTER,
            spark_conf=parse_spark_conf(env.get("FP_SPARK_CONF", "")),
        )

    @property
    def project_offline_root(self) -> str:
        """Every offline path of this deployment lives under its project name."""
        return f"{self.offline_uri.rstrip('/')}/{self.project}"
