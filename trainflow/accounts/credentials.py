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
import mmap
import os
import struct
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from trainflow.errors import TooManyRequests

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


class AuthEpoch:
    """A counter shared by every process using the same data directory."""

    def __init__(self, path: Path) -> None:
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
        return struct.unpack_from("<Q", self._map)[0]  # type: ignore[no-any-return]

    def bump(self) -> None:
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


class CredentialCache:
    """Bounded LRU of verified credentials, trusted only under the epoch they were stored in."""

    def __init__(self, epoch: AuthEpoch, ttl_seconds: float, max_entries: int) -> None:
        self._epoch = epoch
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[Principal, int, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> Principal | None:
        if self._ttl <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, epoch, expires = entry
        if epoch != self._epoch.current() or time.monotonic() >= expires:
            self._entries.pop(key, None)
            return None
        return principal

    def put(self, key: bytes, principal: Principal, epoch: int) -> None:
        """Remember ``principal``; ``epoch`` is the one read *before* verifying the credential."""
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (principal, epoch, time.monotonic() + self._ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget_all(self) -> None:
        """Invalidate every process's cache (this one's at once, the others' on their next read)."""
        self._epoch.bump()
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class LoginLimiter:
    """Failed logins per (username, client address), over a sliding window."""

    MAX_KEYS = 100_000

    def __init__(self, attempts: int, window_seconds: int) -> None:
        self._attempts = attempts
        self._window = window_seconds
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, username: str, address: str) -> None:
        """Raise :class:`TooManyRequests` when this pair has used up its attempts."""
        failures = self._recent(username.casefold(), address)
        if len(failures) >= self._attempts:
            retry_after = max(1, int(failures[0] + self._window - time.monotonic()) + 1)
            raise TooManyRequests(
                f"Too many failed logins for {username!r}; try again in {retry_after} s.",
                retry_after=retry_after,
            )

    def record_failure(self, username: str, address: str) -> None:
        key = (username.casefold(), address)
        with self._lock:
            failures = self._failures.setdefault(key, deque(maxlen=self._attempts))
            failures.append(time.monotonic())
            self._failures.move_to_end(key)
            while len(self._failures) > self.MAX_KEYS:
                self._failures.popitem(last=False)

    def record_success(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username.casefold(), address), None)

    def _recent(self, username_key: str, address: str) -> deque[float]:
        failures = self._failures.get((username_key, address), deque())
        cutoff = time.monotonic() - self._window
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures
