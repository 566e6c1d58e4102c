"""Fetching and reading feeds, in worker processes: the second core's share of a poll.

Fetching (httpx), parsing and normalising (`monitor.parse`) and fingerprinting for stories
(`monitor.stories`) need nothing but the feed, and they are most of a poll's CPU: all of it
when nothing has changed, since a quiet cycle is a thousand conditional GETs. So they run in
worker processes (`MONITOR_PARSE_PROCESSES`, one per spare core by default), each with its own
event loop and connection pool, while the daemon's process keeps the database, the rules, the
stories, the leases and the limits (it asks a worker only once a fetch slot and the host's
turn are its). With no worker (`MONITOR_PARSE_PROCESSES=0`, or a single core) the same
`fetch_and_read` runs in the daemon's process, parsing in a thread.

A worker is a new interpreter (`python -c`, not multiprocessing's spawn, which would load
the daemon's main module, and with it the database, scheduler and notifier code, into every
worker) that imports only what fetching and reading need, and is told only the fetch
settings. It talks to the daemon over a socket pair, in pickles (`multiprocessing.connection`).

A worker that dies, or hangs past the fetch's time limit and a reading allowance, fails the
fetches it held with a transient error (those sources are backed off and polled again) and is
replaced at the next fetch; when it is stopped because one fetch hung it, the other fetches it
held are asked again, once, of its replacement. Workers ignore SIGINT/SIGTERM sent to the
process group (stopping is the daemon's business) and exit when the daemon is gone.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import itertools
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from array import array
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Literal

from monitor.errors import FetchError, TransientFetchError
from monitor.fetch import Fetcher, FetchResult, FetchSettings
from monitor.logs import log
from monitor.normalize import Item
from monitor.parse import FeedItems, read_feed, worker_init
from monitor.stories import Fingerprint, fingerprint

if TYPE_CHECKING:
    from monitor.settings import Settings

READING_ALLOWANCE = 60.0  # seconds a worker may read a fetched feed before it counts as hung


@dataclass(frozen=True)
class FetchRequest:
    url: str
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None  # of the body last read: the same again is not parsed


class _Mark(enum.Enum):
    SEEN = "seen"


# In `Fetched.prints`, for an item the reader did not fingerprint: it was in the feed the
# last time this process read it, so the daemon almost always knows it already (see `Reader`).
SEEN = _Mark.SEEN

# Each item's story fingerprint, in order: None for an item too short to compare, SEEN for
# one the reader saw last time.
Prints = tuple[Fingerprint | None | Literal[_Mark.SEEN], ...]


@dataclass(frozen=True)
class Fetched:
    """A fetch as the poller needs it. `result` never carries the body."""

    result: FetchResult
    body_hash: str | None = None  # None: a 304
    read: FeedItems | None = None  # None: a 304, or the same body as last time
    prints: Prints = ()


def item_print(item: Item) -> Fingerprint | None:
    """An item's story fingerprint (None: too little text to compare)."""
    return fingerprint(item.title, item.summary or item.content, item.publisher)


def read_for_poll(body: bytes, *, url: str, content_type: str | None,
                  seen: Container[int] = ()) -> tuple[FeedItems, Prints]:
    """Parse, normalise and fingerprint: the CPU-bound part of reading a feed. Items whose
    identity hashes to one of `seen` are not fingerprinted (SEEN)."""
    read = read_feed(body, url=url, content_type=content_type)
    return read, tuple(SEEN if hash(i.identity) in seen else item_print(i) for i in read.items)


class Reader:
    """Reads feeds (`read_for_poll`) in a thread, off the event loop, whose other fetches
    keep their clocks and sockets going meanwhile.

    Only new items need a story fingerprint, and a feed that changed mostly holds the items
    it held before (a busy feed gains a few and keeps fifty), so the reader remembers which
    items each feed held when it last read it (a hash of each identity, 8 bytes an item, for
    the most recently read `FEEDS` feeds) and fingerprints only the others. An item it
    skips that turns out to be new after all (the poll that brought it was not saved, say)
    is fingerprinted by the daemon (`Poller._triage`)."""

    FEEDS = 20_000

    def __init__(self) -> None:
        # By feed URL, the least recent first; machine integers, a set only while reading.
        self._seen: dict[str, array[int]] = {}

    async def __call__(self, body: bytes, *, url: str,
                       content_type: str | None) -> tuple[FeedItems, Prints]:
        read, prints = await asyncio.to_thread(read_for_poll, body, url=url,
                                               content_type=content_type,
                                               seen=set(self._seen.pop(url, ())))
        self._seen[url] = array("q", (hash(i.identity) for i in read.items))
        if len(self._seen) > self.FEEDS:
            del self._seen[next(iter(self._seen))]
        return read, prints


async def fetch_and_read(fetcher: Fetcher, request: FetchRequest,
                         read: Callable[..., Awaitable[tuple[FeedItems, Prints]]]) -> Fetched:
    fetched = await fetcher.fetch(request.url, etag=request.etag,
                                  last_modified=request.last_modified)
    if fetched.not_modified:
        return Fetched(fetched)
    assert fetched.body is not None
    body_hash = hashlib.sha256(fetched.body).hexdigest()
    if body_hash == request.body_hash:
        # The server ignores conditional GET but the feed has not changed: no parsing.
        return Fetched(replace(fetched, body=None), body_hash)
    # Parsed against the feed's URL before redirects (the configured one, or the feed its
    # page links to): a redirect must not change how relative GUIDs resolve, or every item
    # would look new.
    items, prints = await read(fetched.body, url=fetched.feed_url or request.url,
                               content_type=fetched.content_type)
    return Fetched(replace(fetched, body=None), body_hash, items, prints)


class _Interrupted(TransientFetchError):
    """A fetch dropped because its worker was stopped for another fetch's sake."""


class Fetching:
    """Where the poller's fetches run: `processes` worker processes, or (0) this one."""

    def __init__(self, settings: Settings, processes: int):
        self.settings = settings
        self.processes = processes
        # Without workers, this process fetches.
        self.fetcher = None if processes else Fetcher(settings)
        self.reader = Reader()
        self._workers: list[_Worker | None] = [None] * processes
        self._ids = itertools.count()

    async def fetch(self, request: FetchRequest) -> Fetched:
        if self.fetcher is not None:
            return await fetch_and_read(self.fetcher, request, self.read)
        try:
            return await self._ask(request)
        except _Interrupted:  # another feed hung the worker: asked again of its replacement
            return await self._ask(request)

    async def _ask(self, request: FetchRequest) -> Fetched:
        worker = self._worker()
        limit = self.settings.fetch_timeout.total_seconds() + READING_ALLOWANCE
        try:
            async with asyncio.timeout(limit) as deadline:
                return await worker.ask(next(self._ids), request)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.error("a feed-fetching process hung; starting another", url=request.url)
            worker.stop(kill=True, interrupted=True)
            raise TransientFetchError(request.url, "the feed-fetching process hung while "
                                      "reading this feed") from None

    async def read(self, body: bytes, *, url: str,
                   content_type: str | None) -> tuple[FeedItems, Prints]:
        """Reading in this process (with no worker)."""
        return await self.reader(body, url=url, content_type=content_type)

    def _worker(self) -> _Worker:
        """The live worker with the fewest fetches under way; a dead one is replaced."""
        for n, worker in enumerate(self._workers):
            if worker is None or not worker.alive:
                if worker is not None:
                    worker.stop(kill=True)  # gone already: only reaped and closed
                self._workers[n] = _Worker(FetchSettings.of(self.settings))
        workers = [w for w in self._workers if w is not None]
        return min(workers, key=lambda w: len(w.pending))

    async def aclose(self) -> None:
        workers = [w for w in self._workers if w is not None]
        self._workers = [None] * self.processes
        for worker in workers:  # futures belong to this thread; the waiting does not
            worker._died("the feed-fetching process was stopped", expected=True)
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
        if self.fetcher is not None:
            await self.fetcher.aclose()


class _Worker:
    """One worker process, seen from the daemon: requests go down a pipe, answers come back
    on it, read by a thread that hands them to the event loop. (Not read on the event loop:
    an answer is often larger than the pipe holds, and a worker stopped half-way through
    writing one would block the loop, and with it the clock that finds hung workers.)"""

    def __init__(self, settings: FetchSettings):
        ours, theirs = socket.socketpair()
        with theirs:
            # A new interpreter rather than a fork: forking a threaded process is unsafe.
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(theirs.fileno()),
                 str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self._conn = Connection(ours.detach())
        self._conn.send(settings)
        self.pending: dict[int, tuple[str, asyncio.Future[Fetched]]] = {}
        self.alive = True
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._listen, name="monitor-fetch-answers", daemon=True).start()

    async def ask(self, request_id: int, request: FetchRequest) -> Fetched:
        future: asyncio.Future[Fetched] = self._loop.create_future()
        self.pending[request_id] = (request.url, future)
        try:
            self._conn.send((request_id, request))
            return await future
        except (OSError, EOFError):
            self._died()
            return await future
        finally:
            self.pending.pop(request_id, None)

    def _listen(self) -> None:
        while True:
            try:
                answer = self._conn.recv()
            except Exception as exc:  # the worker is gone, or an answer cannot be unpickled
                if self.alive and not isinstance(exc, (EOFError, OSError)):
                    log.error("unreadable answer from a feed-fetching process",
                              error=str(exc)[:300])
                    continue
                self._call(self._died)
                return
            self._call(self._answer, *answer)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the event loop has closed: nobody is waiting any more

    def _answer(self, request_id: int, ok: bool, payload: bytes) -> None:
        url, future = self.pending.get(request_id, ("", None))
        if future is None or future.done():
            return  # its poll was cancelled
        try:
            value = pickle.loads(payload)
        except Exception as exc:
            future.set_exception(TransientFetchError(
                url, f"cannot read the worker's answer ({type(exc).__name__}: {exc})"[:300]))
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _died(self, reason: str = "the feed-fetching process died while fetching this "
              "feed", *, expected: bool = False,
              error: type[TransientFetchError] = TransientFetchError) -> None:
        if self.alive and self.pending and not expected:
            log.error("a feed-fetching process died; starting another",
                      fetches=len(self.pending))
        self.alive = False
        for url, future in list(self.pending.values()):
            if not future.done():
                future.set_exception(error(url, reason))

    def stop(self, *, kill: bool = False, interrupted: bool = False) -> None:
        """End the worker: at once (`kill`), or once it has dropped what it was doing. The
        fetches it held fail, as `interrupted` by another fetch when that is why."""
        if interrupted:
            self._died("the feed-fetching process was stopped: another feed hung it",
                       expected=True, error=_Interrupted)
        else:
            self._died("the feed-fetching process was stopped", expected=True)
        if kill:
            self.process.kill()
        else:
            try:
                self._conn.send(None)
            except (OSError, EOFError):
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._conn.close()


# A worker imports what the daemon would: the daemon's module search path, not the working
# directory that `python -c` would put first.
_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); " \
        "from monitor.workers import main; main()"


# In the worker process -----------------------------------------------------------------------

def main() -> None:
    """A worker's entry point: `python -c _BOOT <sys.path> <socket fd> <daemon pid>`."""
    fd, parent = map(int, sys.argv[2:4])
    worker_init(parent)
    conn = Connection(fd)
    try:
        settings = conn.recv()
    except (EOFError, OSError):
        return  # the daemon went away before it said anything
    asyncio.run(_serve_async(conn, settings))


async def _serve_async(conn: Connection, settings: FetchSettings) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    running: set[asyncio.Task[None]] = set()
    reader = Reader()
    async with Fetcher(settings) as fetcher:

        def request() -> None:
            """A request has come (read on the event loop: the daemon writes each one whole,
            and no thread has to hand it over); None or a closed pipe: stop."""
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            if message is None:
                loop.remove_reader(conn.fileno())
                if not stopped.done():
                    stopped.set_result(None)
                return
            task = loop.create_task(_answer(conn, fetcher, reader, *message))
            running.add(task)
            task.add_done_callback(running.discard)

        loop.add_reader(conn.fileno(), request)
        await stopped
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _answer(conn: Connection, fetcher: Fetcher, reader: Reader, request_id: int,
                  request: FetchRequest) -> None:
    """Fetch and read; send back the outcome (pickled here, so that an answer the daemon
    cannot read fails only its own fetch), or the error as a fetch error."""
    ok = True
    try:
        value: Any = await fetch_and_read(fetcher, request, reader)
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # the worker is stopping
        ok, value = False, TransientFetchError(request.url, "the fetch was cancelled")
    except FetchError as exc:
        ok, value = False, exc
    except Exception as exc:
        ok, value = False, TransientFetchError(
            request.url, f"unexpected {type(exc).__name__}: {exc}"[:500])
    try:
        payload = pickle.dumps(value)
    except Exception as exc:
        ok, payload = False, pickle.dumps(TransientFetchError(
            request.url, f"cannot hand the feed back ({type(exc).__name__}: {exc})"[:300]))
    try:
        conn.send((request_id, ok, payload))
    except (OSError, EOFError, ValueError):
        pass  # the daemon is gone or has closed the pipe: nobody is waiting
