"""Password hashing with argon2id, off the event loop, in a bounded pool.

Each hash takes 19 MiB and tens of milliseconds of a core. Unbounded, a burst of logins would
queue hashes in every thread gevent has and grow the server by 19 MiB per hash in flight, and
the event loop, starved of CPU, would stall every stream. So at most ``workers`` hashes run at
once in a process, at most ``max_waiting`` callers wait for one, and the rest are told to come
back (429 with Retry-After) at once.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from trainflow.errors import TooManyRequests

if TYPE_CHECKING:
    from gevent.threadpool import ThreadPool

T = TypeVar("T")

# OWASP's first recommended argon2id profile: 19 MiB, 2 passes, 1 lane. argon2-cffi's default
# (RFC 9106's low-memory profile: 64 MiB, 3 passes, 4 lanes) measured 0.25 s a hash on two idle
# cores and up to 1 s under load, so 150 people signing up at once waited a minute; this one
# takes 0.04-0.05 s.
# A hash records its own parameters: hashes made with the old profile still verify.
_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a miss costs as long as a hit."""
    return _hasher.hash("trainflow-timing-equaliser")


def prepare() -> None:
    """Compute the dummy hash now, so no unknown username's check ever pays for it."""
    _dummy_hash()


def default_workers(processes: int = 1) -> int:
    """The machine's cores less one (an event loop keeps one), shared by the server's processes.

    At least 1 and at most 4 per process.
    """
    return max(1, min(4, ((os.cpu_count() or 2) - 1) // max(1, processes)))


def _is_gevent_serving() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


_thread_state = threading.local()


def _at_low_priority(fn: Callable[..., T], args: tuple[object, ...]) -> T:
    """Run ``fn`` in a hashing thread, which yields the CPU to the event loop when both want it.

    Linux keeps a nice value per thread: a hash waits a little longer on a busy machine, and
    health checks, streams and MLflow calls do not wait behind it.
    """
    if not getattr(_thread_state, "is_niced", False):
        _thread_state.is_niced = True
        if hasattr(os, "setpriority") and sys.platform.startswith("linux"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except OSError:
                pass
    return fn(*args)


class HashPool:
    """At most ``workers`` hashes at once; at most ``max_waiting`` callers queued for a turn."""

    def __init__(self, workers: int = 0, max_waiting: int = 32) -> None:
        self.configure(workers, max_waiting)
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting = 0
        self._seconds = 0.1  # a running average of one hash, for Retry-After
        self.verifications = 0  # password checks done, for tests and the curious

    def configure(self, workers: int, max_waiting: int) -> None:
        self.workers = workers or default_workers()
        self.max_waiting = max_waiting
        # Made on first use, so that under gevent they are gevent's (the server patches first).
        self._slots: Any = None
        self._threads: ThreadPool | None = None

    def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._slots is None:
                self._slots = _semaphore(self.workers)
                self._threads = _thread_pool(self.workers)
            if self._busy >= self.workers and self._waiting >= self.max_waiting:
                queued = self._waiting + self._busy
                retry_after = max(1, math.ceil(queued / self.workers * self._seconds))
                raise TooManyRequests(
                    f"The server is busy checking passwords; try again in {retry_after} s.",
                    retry_after=retry_after,
                )
            self._waiting += 1
            slots, threads = self._slots, self._threads
        try:
            slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        started = time.monotonic()
        with self._lock:
            self._busy += 1
        try:
            if threads is None:  # no event loop to keep free: run here
                return fn(*args)
            # argon2 releases the GIL: the hash runs beside the event loop, not in it.
            result: T = threads.apply(_at_low_priority, (fn, args))
            return result
        finally:
            with self._lock:
                self._busy -= 1
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - started)
            slots.release()

    @property
    def in_use(self) -> int:
        return self._busy


def _thread_pool(size: int) -> ThreadPool | None:
    """Threads of our own under gevent (not the hub's, whose threads do other work too)."""
    if _is_gevent_serving():
        from gevent.threadpool import ThreadPool

        return ThreadPool(size)
    return None


def _semaphore(size: int) -> Any:
    if _is_gevent_serving():
        from gevent.lock import BoundedSemaphore

        return BoundedSemaphore(size)
    return threading.BoundedSemaphore(size)


# One per process: the CPU and memory it guards are the process's.
POOL = HashPool()


def hash_password(password: str) -> str:
    return POOL.run(_hasher.hash, password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such user) costs the same and is False."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    result = POOL.run(check)
    with POOL._lock:
        POOL.verifications += 1
    return result
