"""Service checks for scripts/test, run with the venv's Python (psycopg2 and redis-py).

    python scripts/_services.py pg-check URL        exit 0 answers, 3 refuses the login, 2 otherwise
    python scripts/_services.py pg-ensure-db URL    create URL's database if missing (via db 'postgres')
    python scripts/_services.py redis-check URL     exit 0 when Redis answers PING

Errors go to stderr as one line.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit

OK, DOWN, AUTH = 0, 2, 3


def _pg_connect(url: str, dbname: str | None = None, timeout: int = 3):
    import psycopg2

    kwargs = {"connect_timeout": timeout}
    if dbname is not None:
        kwargs["dbname"] = dbname
    return psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1), **kwargs)


def _is_auth_error(error: Exception) -> bool:
    text = str(error).lower()
    return "authentication" in text or "password" in text or "no pg_hba.conf entry" in text or (
        "role" in text and "does not exist" in text
    )


def pg_check(url: str) -> int:
    """Does the server answer and accept the login? (Checked against database 'postgres'.)"""
    import psycopg2

    try:
        _pg_connect(url, dbname="postgres").close()
        return OK
    except psycopg2.OperationalError as error:
        message = " ".join(str(error).split())
        print(message, file=sys.stderr)
        return AUTH if _is_auth_error(error) else DOWN


def pg_ensure_db(url: str) -> int:
    import psycopg2
    from psycopg2 import errors, sql

    name = urlsplit(url).path.lstrip("/")
    if not name:
        print(f"no database name in {url}", file=sys.stderr)
        return DOWN
    try:
        conn = _pg_connect(url, dbname="postgres")
    except psycopg2.OperationalError as error:
        print(" ".join(str(error).split()), file=sys.stderr)
        return AUTH if _is_auth_error(error) else DOWN
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                print("exists")
                return OK
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:  # created meanwhile by a concurrent run
                print("exists")
                return OK
            print("created")
            return OK
    except psycopg2.Error as error:
        print(" ".join(str(error).split()), file=sys.stderr)
        return DOWN
    finally:
        conn.close()


def redis_check(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return OK
    except redis.exceptions.AuthenticationError as error:
        print(f"redis: {error}", file=sys.stderr)
        return AUTH
    except redis.exceptions.RedisError as error:
        print(f"redis: {error}", file=sys.stderr)
        return DOWN
    finally:
        client.close()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


COMMANDS = {"pg-check": pg_check, "pg-ensure-db": pg_ensure_db, "redis-check": redis_check}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "redact":
        print(redact(argv[1]))
        return OK
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 64
    return COMMANDS[argv[0]](argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
