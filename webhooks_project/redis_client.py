"""One Redis connection pool per process, created lazily."""

import functools
import hashlib
import os

import redis
from django.conf import settings

_client: redis.Redis | None = None
_client_pid: int | None = None


def get_redis() -> redis.Redis:
    """Return this process's Redis client (a new pool after a fork)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        _client_pid = os.getpid()
    return _client


@functools.cache
def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's name)


def run_script(source: str, calls: list[tuple[tuple, list]]) -> list:
    """Call one Lua script once per (keys, args), all in one pipelined round trip.

    EVALSHA alone: redis-py's Script objects ask SCRIPT EXISTS before every
    pipeline, a round trip of its own. A server that lost the script (a
    restart) ran none of the calls: it gets the script, and the calls run again.
    """
    client = get_redis()
    try:
        return _evalsha(client, source, calls)
    except redis.exceptions.NoScriptError:
        client.script_load(source)
        return _evalsha(client, source, calls)


def _evalsha(client, source: str, calls: list[tuple[tuple, list]]) -> list:
    sha = _sha(source)
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(sha, len(keys), *keys, *args)
    return pipe.execute()
