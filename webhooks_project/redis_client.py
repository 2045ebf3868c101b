"""One Redis connection pool per process, created lazily."""

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
