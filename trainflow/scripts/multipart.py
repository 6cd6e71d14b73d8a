"""Reading a ``multipart/form-data`` upload straight to disk, hashing it on the way.

Werkzeug's own form parser would also spool big files to disk, but it reports a truncated or
malformed body as an empty form. Reading the stream ourselves with Werkzeug's sans-IO decoder
lets every failure say what went wrong, and enforces the size limit as bytes arrive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from trainflow.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

CHUNK = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32


@dataclass
class ReceivedFile:
    """One file part, already on disk."""

    field: str
    filename: str
    content_type: str
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)
    spooled: list[Path] = field(default_factory=list)  # every temporary file, repeats included

    def discard(self) -> None:
        """Delete every temporary file the body was spooled to."""
        for path in self.spooled:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def read_multipart(
    stream: IO[bytes], content_type: str | None, content_length: int | None, spool_dir: Path, max_bytes: int
) -> ReceivedForm:
    """Parse the body; file parts go to temporary files in ``spool_dir``."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Send the file as multipart/form-data (a form field named 'file'), not {mimetype or 'no type'}."
        )
    boundary = options.get("boundary", "")
    if not boundary:
        raise BadRequest(
            "The multipart body has no boundary in its Content-Type; let the client set the header "
            "(curl -F, FormData in a browser) instead of writing it by hand."
        )
    limit_message = f"The upload is larger than the {max_bytes // (1024 * 1024)} MB limit."
    if content_length is not None and content_length > max_bytes + MAX_FIELD_BYTES:
        raise PayloadTooLarge(limit_message)
    spool_dir.mkdir(parents=True, exist_ok=True)
    form = ReceivedForm()
    try:
        _decode(stream, boundary.encode("latin-1"), spool_dir, max_bytes, limit_message, form)
    except BaseException:
        form.discard()
        raise
    return form


def _decode(
    stream: IO[bytes],
    boundary: bytes,
    spool_dir: Path,
    max_bytes: int,
    limit_message: str,
    form: ReceivedForm,
) -> None:
    # The decoder's own limit bounds what it buffers between events (part headers included).
    decoder = MultipartDecoder(boundary, max_form_memory_size=4 * CHUNK, max_parts=MAX_PARTS)
    writer: _FileWriter | None = None
    current_field: tuple[str, bytearray] | None = None
    total = 0
    try:
        while True:
            event = _next_event(decoder)
            if isinstance(event, Epilogue):
                return
            if isinstance(event, NeedData):
                _feed(decoder, stream)
            elif isinstance(event, File):
                _check_name(event.name, form)
                fd, name = tempfile.mkstemp(dir=spool_dir, prefix="upload-")
                received = ReceivedFile(
                    event.name, event.filename, event.headers.get("content-type", ""), Path(name)
                )
                form.spooled.append(received.path)
                form.files[event.name] = received
                writer = _FileWriter(received, os.fdopen(fd, "wb"))
            elif isinstance(event, Field):
                _check_name(event.name, form)
                current_field = (event.name, bytearray())
            elif isinstance(event, Data):
                if writer is not None:
                    total += len(event.data)
                    if total > max_bytes:
                        raise PayloadTooLarge(limit_message)
                    writer.write(event.data)
                    if not event.more_data:
                        writer.close()
                        writer = None
                elif current_field is not None:
                    current_field[1].extend(event.data)
                    if len(current_field[1]) > MAX_FIELD_BYTES:
                        raise PayloadTooLarge(f"The form field {current_field[0]!r} is over 64 KB.")
                    if not event.more_data:
                        form.fields[current_field[0]] = _text(*current_field)
                        current_field = None
    finally:
        if writer is not None:
            writer.close()


class _FileWriter:
    """Writes one file part to disk, counting and hashing as it goes."""

    def __init__(self, received: ReceivedFile, handle: BinaryIO) -> None:
        self.received = received
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.received.size += len(data)

    def close(self) -> None:
        self.handle.close()
        self.received.sha256 = self.digest.hexdigest()


def _check_name(name: str | None, form: ReceivedForm) -> None:
    """A part needs a name of its own: a form naming one twice is refused, not resolved by order."""
    if not name:
        raise BadRequest(
            "A part of the form has no name; send the file as "
            '`Content-Disposition: form-data; name="file"; filename="..."`.'
        )
    if name in form.fields or name in form.files:
        raise BadRequest(f"The form has more than one part named {name!r}; send each once.")


def _next_event(decoder: MultipartDecoder) -> object:
    try:
        return decoder.next_event()
    except ValueError as e:
        if decoder.complete:  # the stream ended before the closing boundary
            raise BadRequest("The upload ended early: the multipart body is truncated.") from None
        raise BadRequest(f"The multipart body is malformed: {e}.") from None
    except RequestEntityTooLarge:
        raise PayloadTooLarge("A form field or the number of parts is over the limit.") from None


def _feed(decoder: MultipartDecoder, stream: IO[bytes]) -> None:
    if decoder.complete:
        raise BadRequest("The upload ended early: the multipart body is truncated.")
    try:
        chunk = stream.read(CHUNK)
    except (ClientDisconnected, OSError):
        # Werkzeug's and gevent's ways of saying the client stopped sending mid-body.
        chunk = b""
    try:
        decoder.receive_data(chunk or None)
    except RequestEntityTooLarge:
        raise PayloadTooLarge("A part's headers are over the limit.") from None


def _text(name: str, value: bytearray) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"The form field {name!r} is not UTF-8 text.") from None
