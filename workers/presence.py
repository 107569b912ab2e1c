"""Which devices live workers serve, as the workers announce it in the broker's Redis.

Celery's ``inspect().active_queues()`` broadcast is answered by a worker's main thread, and
in the solo pool that thread runs the job: a busy worker never answered, so the API called
its device unserved (and told users to start a worker they had) for as long as a job ran.
Instead, each worker process keeps one key, ``hwnas:worker:<identity>``, holding its
devices, and one holding its database's id (an API counts only workers of its own
database), renewed every heartbeat by a thread of its own (``Announcer``, started with the
reaper; alive while a job runs), with a time to live of a few heartbeats; the API reads the
keys. A worker that dies stops renewing its keys, which expire; one whose shutdown begins
deletes them. Brokers other than Redis fall back to the broadcast
(``workers.celery_dispatch``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

log = logging.getLogger(__name__)
PREFIX = "hwnas:worker:"
#: Beside each worker's key: the id of the database it serves.
DATABASE_PREFIX = "hwnas:worker-database:"
REDIS_SCHEMES = ("redis", "rediss")


def redis_of(broker_url: str) -> redis.Redis | None:
    """A client of the broker's Redis database, or None for another kind of broker. The
    URL's query (kombu's transport options, which redis-py does not take) is left out."""
    parts = urlsplit(broker_url)
    if parts.scheme not in REDIS_SCHEMES:
        return None
    plain = parts._replace(query="").geturl()
    return redis.Redis.from_url(plain, socket_timeout=2.0, socket_connect_timeout=2.0)


def ttl_of(heartbeat_s: float) -> int:
    """Seconds a key outlives its last renewal: three missed heartbeats, at least 10 s."""
    return max(10, round(3 * heartbeat_s))


def announce(
    client: redis.Redis, identity: str, devices: list[str], ttl_s: int, database: str | None
) -> None:
    """The worker's devices (a JSON list, as versions before the database's identity read
    it: an API not yet upgraded keeps counting them), and beside it, under
    ``DATABASE_PREFIX``, its database's id (``store.db.database_id``)."""
    with client.pipeline() as pipe:
        pipe.set(PREFIX + identity, json.dumps(sorted(devices)), ex=ttl_s)
        if database is not None:
            pipe.set(DATABASE_PREFIX + identity, database, ex=ttl_s)
        pipe.execute()


def withdraw(client: redis.Redis, identity: str) -> None:
    client.delete(PREFIX + identity, DATABASE_PREFIX + identity)


@dataclass
class Served:
    """What live workers announce: the devices served by workers of this database (or of
    an unknown one: a worker of an older version), and the other databases' workers
    (identity -> devices), whose devices are not counted."""

    devices: set[str] = field(default_factory=set)
    elsewhere: dict[str, list[str]] = field(default_factory=dict)


def served_devices(client: redis.Redis, database: str | None = None) -> Served:
    """Devices of every worker whose key has not expired, and of database ``database``
    (None: any)."""
    keys = list(client.scan_iter(match=PREFIX + "*", count=500))
    served = Served()
    if not keys:
        return served
    identities = [_text(key).removeprefix(PREFIX) for key in keys]
    values = client.mget(keys)
    databases = client.mget([DATABASE_PREFIX + identity for identity in identities])
    for identity, value, theirs in zip(identities, values, databases, strict=True):
        if value is None:  # expired between the scan and the read
            continue
        try:
            devices = [str(device) for device in json.loads(value)]
        except (ValueError, TypeError):  # not a worker's: not a reason to call the broker away
            log.warning("ignoring %r: not a list of devices", PREFIX + identity)
            continue
        if database is not None and theirs is not None and _text(theirs) != database:
            served.elsewhere[identity] = devices
        else:
            served.devices.update(devices)
    return served


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Announcer:
    """A worker's announcement kept fresh by a thread of its own (a slow pass of the reaper
    must not let the key expire under a live worker). Once told to stop, the thread
    withdraws it: ``stop_soon`` is safe from a signal handler, ``stop`` also waits."""

    def __init__(
        self,
        client: redis.Redis,
        identity: str,
        devices: list[str],
        heartbeat_s: float,
        database_of: Callable[[], str | None] | None = None,
    ) -> None:
        self.client, self.identity, self.devices = client, identity, list(devices)
        # Looked up in the thread, again at each announcement until it answers: a database
        # away when the worker starts must not stop the announcements (review, session 22).
        self.database: str | None = None
        self._database_of = database_of
        self.interval_s, self.ttl_s = heartbeat_s, ttl_of(heartbeat_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hwnas-presence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.database is None and self._database_of is not None:
                try:
                    self.database = self._database_of()
                except Exception as exc:  # announced without it meanwhile: counted anywhere
                    log.warning("reading this worker's database identity failed: %s", exc)
            try:
                announce(self.client, self.identity, self.devices, self.ttl_s, self.database)
            except redis.RedisError as exc:  # broker away: the API sees the key expire
                log.warning("announcing this worker's devices failed: %s", exc)
            self._stop.wait(self.interval_s)
        try:
            withdraw(self.client, self.identity)
        except redis.RedisError as exc:  # the key expires on its own
            log.warning("withdrawing this worker's devices failed: %s", exc)

    def stop_soon(self) -> None:
        """A worker that begins to shut down takes no new job: its devices stop counting."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()
