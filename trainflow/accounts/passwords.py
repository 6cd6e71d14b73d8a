"""Password hashing with argon2id, off the event loop."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")

# argon2-cffi's defaults are RFC 9106's low-memory profile: 64 MiB, 3 passes, 4 lanes.
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a miss costs as long as a hit."""
    return _hasher.hash("trainflow-timing-equaliser")


def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """Run CPU-heavy C code in gevent's thread pool when gevent serves, so streams keep flowing.

    argon2 releases the GIL, so a hash in a worker thread does not stall other requests.
    """
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            import gevent

            return gevent.get_hub().threadpool.apply(fn, args)  # type: ignore[no-any-return]
    return fn(*args)


def hash_password(password: str) -> str:
    return run_blocking(_hasher.hash, password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such user) costs the same and is False."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return run_blocking(check)
