"""The verified-credential cache, its cross-process invalidation, and the failed-login limit.

A Basic credential costs an argon2 verification (tens of milliseconds); the MLflow client
sends one with every call. So a verified credential is remembered, keyed by a SHA-256 of the
header (the password itself is never a key), for a short TTL.

Forgetting must be immediate, in every server process: a shared 8-byte counter, the *auth
epoch*, lives in a memory-mapped file in the data directory. Every change that could make a
remembered credential wrong (password change, logout, role change, user deleted) bumps it, and
an entry is only trusted while the epoch it was stored under is still current. Reading it is
one memory load, so a cache hit stays in the microseconds.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from trainflow.errors import TooManyRequests

T = TypeVar("T")

try:
    import fcntl
except ImportError:  # Windows: one process, so the in-process lock below is enough.
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    user_id: int
    username: str
    is_admin: bool
    token_id: str | None = None  # the JWT's jti when a Bearer token was used
    token_expires: int | None = None
    # A job's token acts for the job's owner, on the job's own MLflow run only.
    job_id: int | None = None
    run_scope: str | None = None
    experiment_scope: str | None = None
    # The account's random public id, which tokens name: never matches a later account.
    public_id: str = ""


class AuthEpoch:
    """A counter shared by every process using the same data directory.

    Hosts with data directories of their own share it through the event bus: ``on_bump``
    announces a bump, and a peer's announcement arrives as :meth:`bump_quietly`.
    """

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.on_bump: Callable[[], None] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.write(fd, b"\0" * 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self._path = path
        self._lock = threading.Lock()

    def current(self) -> int:
        epoch: int = struct.unpack_from("<Q", self._map)[0]
        return epoch

    def bump(self) -> None:
        self.bump_quietly()
        if self.on_bump is not None:
            self.on_bump()

    def bump_quietly(self) -> None:
        """Bump without announcing it: another host's bump, heard on the bus."""
        with self._lock, _file_lock(self._path):
            struct.pack_into("<Q", self._map, 0, self.current() + 1)


class _file_lock:  # noqa: N801 - used as a context manager
    def __init__(self, path: Path) -> None:
        self._path = path.with_suffix(".lock")
        self._fd = -1

    def __enter__(self) -> None:
        if fcntl is not None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)


@dataclass
class _Entry:
    principal: Principal
    epoch: int
    expires: float
    proof: bytes | None
    # Client addresses (limit keys) the credential was verified or accepted from.
    addresses: set[str] = field(default_factory=set)


class CredentialCache:
    """Bounded LRU of verified credentials, trusted only under the epoch they were stored in.

    An entry may carry a ``proof``: a digest of the stored password hash the credential was
    verified against. Once the entry's time is up, :meth:`renewable` still hands it out under
    the same epoch, and the caller renews it if the account's stored hash is still that one: a
    password that verified against a hash verifies against it again, so a database read
    replaces a new argon2 run (every Basic client would otherwise cost a hash a minute).

    An entry also remembers the client addresses it was used from (up to
    ``MAX_ADDRESSES``), so that a client keeps working while a guesser elsewhere, or at its
    own address, has locked the username, while a hit from any other address is checked
    against the lock like a guess (see ``trainflow.accounts.auth``).
    """

    MAX_ADDRESSES = 8

    def __init__(self, epoch: AuthEpoch, ttl_seconds: float, max_entries: int) -> None:
        self._epoch = epoch
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def proof(password_hash: str) -> bytes:
        return hashlib.sha256(password_hash.encode()).digest()

    @staticmethod
    def key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> Principal | None:
        if self._ttl <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        is_spent = time.monotonic() >= entry.expires and entry.proof is None
        if entry.epoch != self._epoch.current() or is_spent:
            self._entries.pop(key, None)
            return None
        return entry.principal if time.monotonic() < entry.expires else None

    def renewable(self, key: bytes) -> tuple[Principal, bytes] | None:
        """An entry whose time is up, with its proof, if it was stored under the current epoch."""
        entry = self._entries.get(key)
        if entry is None or entry.proof is None or entry.epoch != self._epoch.current():
            return None
        return entry.principal, entry.proof

    def put(
        self,
        key: bytes,
        principal: Principal,
        epoch: int,
        proof: bytes | None = None,
        address: str | None = None,
    ) -> None:
        """Remember ``principal``; ``epoch`` is the one read *before* verifying the credential.

        ``address`` is the client's that the credential was verified from; the addresses of
        an entry it renews (same account, same epoch) are kept.
        """
        if self._ttl <= 0:
            return
        with self._lock:
            previous = self._entries.get(key)
            addresses: set[str] = set()
            if (
                previous is not None
                and previous.epoch == epoch
                and previous.principal.public_id == principal.public_id
            ):
                addresses = previous.addresses
            if address is not None and len(addresses) < self.MAX_ADDRESSES:
                addresses.add(address)
            self._entries[key] = _Entry(principal, epoch, time.monotonic() + self._ttl, proof, addresses)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def used_from(self, key: bytes, address: str) -> bool:
        """Whether the entry was verified or accepted from ``address`` before."""
        entry = self._entries.get(key)
        return entry is not None and address in entry.addresses

    def add_address(self, key: bytes, address: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and len(entry.addresses) < self.MAX_ADDRESSES:
                entry.addresses.add(address)

    def forget_all(self) -> None:
        """Invalidate every process's cache (this one's at once, the others' on their next read)."""
        self._epoch.bump()
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[T]):
    """Concurrent calls with one key share the first caller's run: its result or its error."""

    WAIT_SECONDS = 120.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight[T]] = {}

    @property
    def waiting(self) -> int:
        """Callers waiting on another's run."""
        with self._lock:
            return sum(flight.waiters for flight in self._flights.values())

    def run(self, key: bytes, fn: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            is_first = flight is None
            if flight is None:
                # Made here, at request time: under gevent, after threading was patched.
                flight = self._flights[key] = _Flight(threading.Event())
            else:
                flight.waiters += 1
        if not is_first:
            if not flight.done.wait(self.WAIT_SECONDS):
                raise TooManyRequests("The server is busy checking passwords; try again in 1 s.", 1)
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = fn()
            return flight.value
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


@dataclass
class _Flight(Generic[T]):
    done: threading.Event
    value: T = field(init=False)  # set before done, unless error is
    error: BaseException | None = None
    waiters: int = 0


class LoginLimiter:
    """How many password checks a client may start, counted *before* the hash runs.

    Two limits, both per process:

    - per (username, client address): ``attempts`` failures within ``window_seconds``, checks
      still running counted as failures, so N concurrent guesses verify at most ``attempts``;
      a correct password clears the pair. A stranger's failures therefore lock only the
      stranger's own (username, address) pairs, never the victim's logins from elsewhere.
    - per client address (IPv6: per /64): a token bucket of ``address_burst`` checks, earning
      ``address_per_minute`` back; a check that succeeds gives its token back, so only failures
      (random usernames included) spend it. A (username, address) pair that signed in
      successfully before is exempt, so an address's users keep signing in while someone
      behind the same address sprays other names.
    """

    MAX_KEYS = 100_000
    KNOWN_PAIR_SECONDS = 30 * 86_400

    def __init__(
        self, attempts: int, window_seconds: int, address_burst: int = 20, address_per_minute: int = 10
    ) -> None:
        self._attempts = attempts
        self._window = window_seconds
        self._burst = float(address_burst)
        self._rate = address_per_minute / 60.0
        self._pairs: OrderedDict[tuple[bytes, str], _PairCount] = OrderedDict()
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # [tokens, updated]
        self._known: OrderedDict[tuple[bytes, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def refuse_if_locked(self, username: str, address: str) -> None:
        """Raise :class:`TooManyRequests` if this pair has met its failed-login limit.

        For a sign-in whose password is taken from the cache, which costs no check: a locked
        pair must get the same 429 for its right password as for a wrong one, or the cache
        would tell a guesser which guess was right.
        """
        now = time.monotonic()
        with self._lock:
            pair = self._pairs.get(self._key(username, address))
            if pair is not None:
                pair.prune(now - self._window)
                self._refuse_locked(pair, now)

    def _refuse_locked(self, pair: _PairCount, now: float) -> None:
        """Raise while ``pair`` (pruned) holds as many failures as the window allows."""
        if len(pair.failures) >= self._attempts:
            wait = pair.failures[0] + self._window - now
            raise _too_many("Too many failed logins for this username from your address", wait)

    @staticmethod
    def _key(username: str, address: str) -> tuple[bytes, str]:
        # A digest: a Basic header may carry a username of kilobytes, and keys are kept.
        return (hashlib.sha256(username.casefold().encode("utf-8", "surrogatepass")).digest(), address)

    def reserve(self, username: str, address: str) -> LoginAttempt:
        """Take one check for this pair and address, or raise :class:`TooManyRequests`."""
        key = self._key(username, address)
        now = time.monotonic()
        with self._lock:
            pair = self._pairs.get(key)
            if pair is not None:
                pair.prune(now - self._window)
                if len(pair.failures) + pair.pending >= self._attempts:
                    # Checks still running will end within seconds; failures only with the window.
                    self._refuse_locked(pair, now)
                    raise _too_many(
                        "Too many sign-ins for this username from your address are being checked at once",
                        1.0,
                    )
            is_charged = self._known.get(key, 0.0) <= now
            if is_charged:
                self._take_token(address, now)
            if pair is None:
                pair = self._pairs[key] = _PairCount()
                _trim(self._pairs, self.MAX_KEYS)
            self._pairs.move_to_end(key)
            pair.pending += 1
        return LoginAttempt(self, key, is_charged)

    def reserve_address(self, address: str) -> None:
        """Take one check from ``address``'s budget (a registration: nobody signs in)."""
        with self._lock:
            self._take_token(address, time.monotonic())

    def give_back(self, address: str) -> None:
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is not None:
                bucket[0] = min(self._burst, bucket[0] + 1)

    def _take_token(self, address: str, now: float) -> None:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = [self._burst, now]
            _trim(self._buckets, self.MAX_KEYS)
        self._buckets.move_to_end(address)
        bucket[0] = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if bucket[0] < 1:
            wait = (1 - bucket[0]) / self._rate if self._rate > 0 else float(self._window)
            # Checks still running hold a token too: they may yet fail.
            raise _too_many("Too many sign-ins from your address (failed or still being checked)", wait)
        bucket[0] -= 1

    def _finish(self, key: tuple[bytes, str], is_charged: bool, outcome: str) -> None:
        now = time.monotonic()
        with self._lock:
            pair = self._pairs.get(key)
            if pair is not None:
                pair.pending = max(0, pair.pending - 1)
                if outcome == "failed":
                    pair.failures.append(now)
                elif outcome == "succeeded":
                    pair.failures.clear()
                if not pair.failures and not pair.pending:
                    del self._pairs[key]
            if outcome == "succeeded":
                self._known[key] = now + self.KNOWN_PAIR_SECONDS
                self._known.move_to_end(key)
                _trim(self._known, self.MAX_KEYS)
        if is_charged and outcome != "failed":
            self.give_back(key[1])


class LoginAttempt:
    """A reserved password check: end it with :meth:`failed` or :meth:`succeeded`.

    Leaving the ``with`` block without either (the hash pool was full, the database failed)
    gives the reservation back uncounted.
    """

    def __init__(self, limiter: LoginLimiter, key: tuple[bytes, str], is_charged: bool) -> None:
        self._limiter = limiter
        self._key = key
        self._is_charged = is_charged
        self._is_done = False

    def failed(self) -> None:
        self._end("failed")

    def succeeded(self) -> None:
        self._end("succeeded")

    def _end(self, outcome: str) -> None:
        if not self._is_done:
            self._is_done = True
            self._limiter._finish(self._key, self._is_charged, outcome)

    def __enter__(self) -> LoginAttempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end("abandoned")


@dataclass
class _PairCount:
    failures: deque[float] = field(default_factory=deque)
    pending: int = 0

    def prune(self, cutoff: float) -> None:
        while self.failures and self.failures[0] < cutoff:
            self.failures.popleft()


def _trim(entries: OrderedDict[Any, Any], most: int) -> None:
    while len(entries) > most:
        entries.popitem(last=False)


def _too_many(what: str, wait_seconds: float) -> TooManyRequests:
    retry_after = max(1, math.ceil(wait_seconds))
    return TooManyRequests(f"{what}; try again in {retry_after} s.", retry_after=retry_after)
