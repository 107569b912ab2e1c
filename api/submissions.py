"""Job submissions: stored in batches by one writer thread, then dispatched.

``POST /v1/jobs`` awaits ``JobSubmitter.submit`` on the event loop. Submissions wait in a
list on the loop; whenever no batch is being written, the waiting ones (up to
``max_batch``) go to the writer thread as one batch: on PostgreSQL one INSERT statement in
autocommit, on a connection the thread keeps (one round trip); elsewhere one executemany
and one commit. The requests are answered as soon as their rows are committed, and the
batch's jobs go on to a second thread that hands them to the dispatcher in order: a worker
always finds the row it is told about, and a slow publish (a broker that is away) delays
neither the answers nor the next batch. While a batch is written, new submissions gather
for the next one, so under load the commit and the thread hops are shared by many
requests; alone, a submission costs one hop there and back, as a thread-pool handler did.
On SQLite the API's own inserts then take the file's one write slot one batch at a time
instead of one request at a time (the embedded workers' writes still come in between).

A batch whose write fails fails every request in it (none of it was stored); a batch whose
connection dropped is first written once more on a new one. (If that finds no database,
the first try may have committed: the requests then fail although their jobs are stored,
the uncertainty of any commit whose answer was lost.) A dispatch that raises is
logged; its job is stored and stays queued (the embedded dispatcher resumes queued jobs at
start, Celery's reaper re-publishes them). A request cancelled before its batch was written
(client gone) stores nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy.orm import Session, sessionmaker

from core.errors import ServiceUnavailable
from store import jobs as q
from store.db import HeldConnectionWriter
from store.jobs import JobRow
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)

Waiting = tuple[q.Submission, "asyncio.Future[JobRow]"]


class JobSubmitter:
    """Group commit for new jobs (see the module's docstring); used from one event loop."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        *,
        max_batch: int = 256,
        limit: int = 0,
    ) -> None:
        self._store_batch = HeldConnectionWriter(factory)  # used on the writer thread only
        self._dispatcher = dispatcher
        self._max_batch = max_batch
        self._limit = limit  # of each API key's active jobs (HWNAS_MAX_ACTIVE_JOBS_PER_KEY)
        #: Held, with a ``limit``, over a count of a key's active jobs and the insert it
        #: lets in, on both paths (a batch; a keyed submission: ``api.routes.jobs``), so
        #: that two do not both count below the limit and both insert (review 33a: 20
        #: keyed submissions at once, limit 2: 9 stored). Other processes on the database
        #: wait in ``store.jobs.counting_across_processes``; this keeps the threads of one
        #: from queueing there, each on a connection of the pool.
        self.limit_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, "hwnas-submit")
        self._dispatching = ThreadPoolExecutor(1, "hwnas-dispatch")
        self._waiting: list[Waiting] = []
        self._in_flight: asyncio.Future[None] | None = None
        self._closed = False

    def counting(self) -> AbstractContextManager[object]:
        """Held over a count of a key's active jobs and the insert it lets in
        (``limit_lock``), where there is a ``limit``; nothing to hold otherwise."""
        return self._counting() if self._limit else nullcontext()

    @contextmanager
    def _counting(self) -> Iterator[None]:
        """``limit_lock``, waited for at most ``LIMIT_LOCK_WAIT_S`` (503 after): its holder
        waits as long for the other processes' lock at most, so a request waits about
        twice that in all, not that for each submission queued before it (review 34b)."""
        if not self.limit_lock.acquire(timeout=q.LIMIT_LOCK_WAIT_S):
            raise ServiceUnavailable(
                "other submissions held the count of active jobs for over "
                f"{q.LIMIT_LOCK_WAIT_S:g} s: submit again"
            )
        try:
            yield
        finally:
            self.limit_lock.release()

    async def submit(self, new: q.Submission) -> JobRow:
        """Store a queued job; its row once committed (dispatch follows). ``LimitReached``
        if its API key has as many active jobs as the ``limit`` allows."""
        if self._closed:
            raise ServiceUnavailable("the API is shutting down: submit the job again")
        future: asyncio.Future[JobRow] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, future))
        if self._in_flight is None:
            self._flush()
        return await future

    async def aclose(self) -> None:
        """Store and dispatch everything submitted so far, then stop both threads."""
        self._closed = True
        while self._in_flight is not None:
            await asyncio.wait([self._in_flight])
        self._writer.shutdown(wait=True)
        self._store_batch.close()  # the writer thread has ended
        self._dispatching.shutdown(wait=True)

    def _flush(self) -> None:
        waiting = [item for item in self._waiting if not item[1].cancelled()]
        batch, self._waiting = waiting[: self._max_batch], waiting[self._max_batch :]
        if not batch:
            self._in_flight = None
            return
        loop = asyncio.get_running_loop()
        try:
            self._writer.submit(self._write, loop, batch)
        except RuntimeError as exc:  # the writer is shut down (the interpreter is exiting)
            self._in_flight = None
            refused = ServiceUnavailable("the API is shutting down: submit the job again")
            refused.__cause__ = exc
            self._settle(batch, [], refused)
            return
        self._in_flight = loop.create_future()  # settled by _settle, on this loop, later

    def _write(self, loop: asyncio.AbstractEventLoop, batch: list[Waiting]) -> None:
        """On the writer thread: the batch stored, then settled on the loop straight from
        here. (``run_in_executor`` would settle it a turn of the loop later: its future's
        callbacks run a turn after the future is done, under load milliseconds.) The batch
        is settled whatever happens, so its requests and the next batch never hang."""
        rows: list[JobRow | None] = []
        error: Exception | None = None
        try:
            rows = self._store([new for new, _ in batch])
        except Exception as exc:  # the batch's requests are answered with it
            error = exc
        except BaseException as exc:  # answered too, then let go on
            log.error("storing %d submitted jobs was interrupted: %r", len(batch), exc)
            error = ServiceUnavailable("storing the job was interrupted: submit it again")
            raise
        finally:
            try:
                loop.call_soon_threadsafe(self._settle, batch, rows, error)
            except RuntimeError:  # the loop is closed: nobody is left to answer
                log.warning("%d job submissions not answered: the event loop closed", len(batch))

    def _store(self, batch: list[q.Submission]) -> list[JobRow | None]:
        """The batch stored (one statement on PostgreSQL, on a held connection: one round
        trip; a transaction elsewhere; with a ``limit``, a count before it), then its
        dispatch queued; a row per submission, None for those refused by the limit."""
        new = q.NewJobs(batch, limit=self._limit)
        with self.counting():
            stored = self._store_batch.write(new.insert)
        if stored:
            self.dispatch_later(stored)
        rows: list[JobRow | None] = list(stored)
        for k in new.refused:
            rows.insert(k, None)
        return rows

    def dispatch_later(self, rows: list[JobRow]) -> None:
        """Hand stored jobs to the dispatcher, in order, on the dispatching thread (a slow
        publish delays no answer); also for the jobs stored by other paths (a keyed
        submission: ``api.routes.jobs``)."""
        try:
            self._dispatching.submit(self._dispatch, rows)
        except RuntimeError:  # shut down (interpreter exit): stored, so answered as such
            log.warning(
                "%d stored jobs not dispatched (shutting down): they stay queued", len(rows)
            )

    def _dispatch(self, rows: list[JobRow]) -> None:
        try:
            self._dispatcher.dispatch_many([(row.id, row.device) for row in rows])
        except Exception:  # dispatch_many logs its own; this thread must outlive anything
            log.exception("dispatching %d stored jobs failed; they stay queued", len(rows))

    def _settle(
        self, batch: list[Waiting], rows: list[JobRow | None], error: Exception | None
    ) -> None:
        try:
            for index, (new, future) in enumerate(batch):
                if future.done():  # the request was cancelled (client gone) meanwhile
                    continue
                if error is not None:
                    future.set_exception(error)
                elif (row := rows[index]) is None:
                    future.set_exception(q.over_limit(new.submitted_by, self._limit))
                else:
                    future.set_result(row)
        finally:  # the next batch goes, whatever happened to this one's answers
            if self._in_flight is not None and not self._in_flight.done():
                self._in_flight.set_result(None)
            self._in_flight = None
            if self._waiting:
                self._flush()
