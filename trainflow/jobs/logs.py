"""Reading a job's log file (written by its supervisor) without holding it in memory.

``logs.idx`` beside ``logs.ndjson`` holds the byte offset of every 1000th record (8 bytes,
little-endian), so a page deep into a long log starts with a seek, not a scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trainflow.runner.supervisor import INDEX_EVERY


def complete_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    """The log's records from the ``offset``-th on, skipping a last one still being written."""
    start_record, position = _nearest_indexed(path, offset)
    try:
        with open(path, "rb") as f:
            f.seek(position)
            for index, raw in enumerate(f, start=start_record):
                if not raw.endswith(b"\n"):
                    return
                if index >= offset:
                    yield raw
    except FileNotFoundError:
        return


def _nearest_indexed(path: Path, offset: int) -> tuple[int, int]:
    """(record number, byte offset) of the last indexed record at or before ``offset``."""
    try:
        with open(path.with_suffix(".idx"), "rb") as f:
            entries = f.seek(0, 2) // 8
            if entries == 0:
                return 0, 0
            # Not indexed that far (yet): the last entry there is. Never seek past the file:
            # a far offset would ask the file system for a position it refuses (EINVAL).
            slot = min(offset // INDEX_EVERY, entries - 1)
            f.seek(slot * 8)
            entry = f.read(8)
    except FileNotFoundError:
        return 0, 0
    return slot * INDEX_EVERY, int.from_bytes(entry, "little")
