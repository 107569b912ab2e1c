"""Which devices live workers serve, as the workers announce it in the broker's Redis.

Celery's ``inspect().active_queues()`` broadcast is answered by a worker's main thread, and
in the solo pool that thread runs the job: a busy worker never answered, so the API called
its device unserved (and told users to start a worker they had) for as long as a job ran.
Instead, each worker's background thread (``workers.reaper``, alive while a job runs) keeps
one key per worker process, ``hwnas:worker:<identity>``, holding its devices, with a time to
live of a few heartbeats; the API reads the keys. A worker that dies stops renewing its
key, which expires; one that stops cleanly deletes it. Brokers other than Redis fall back to
the broadcast (``workers.celery_dispatch``).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import redis

PREFIX = "hwnas:worker:"
REDIS_SCHEMES = ("redis", "rediss")


def redis_of(broker_url: str) -> redis.Redis | None:
    """A client of the broker's Redis database, or None for another kind of broker."""
    if urlsplit(broker_url).scheme not in REDIS_SCHEMES:
        return None
    return redis.Redis.from_url(broker_url, socket_timeout=2.0, socket_connect_timeout=2.0)


def ttl_of(heartbeat_s: float) -> int:
    """Seconds a key outlives its last renewal: three missed heartbeats, at least 10 s."""
    return max(10, round(3 * heartbeat_s))


def announce(client: redis.Redis, identity: str, devices: list[str], ttl_s: int) -> None:
    client.set(PREFIX + identity, json.dumps(sorted(devices)), ex=ttl_s)


def withdraw(client: redis.Redis, identity: str) -> None:
    client.delete(PREFIX + identity)


def served_devices(client: redis.Redis) -> set[str]:
    """Devices of every worker whose key has not expired."""
    keys = list(client.scan_iter(match=PREFIX + "*", count=500))
    if not keys:
        return set()
    served: set[str] = set()
    for value in client.mget(keys):
        if value is not None:  # expired between the scan and the read
            served.update(json.loads(value))
    return served
