"""Checking an uploaded file and laying it out under the uploads folder.

A script is stored as ``<uploads>/<storage key>/original`` (the bytes as uploaded) and
``<uploads>/<storage key>/files/`` (what a job runs: the ``.py`` file, or the unpacked
archive). Nothing is ever written outside ``<uploads>``: archive members are checked and
written one by one to paths we compute, never with ``extractall``.
"""

from __future__ import annotations

import ast
import functools
import lzma
import os
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from trainflow.errors import BadRequest, PayloadTooLarge
from trainflow.scripts import inline_metadata

MAX_MEMBERS = 10_000
MAX_FILENAME = 255  # bytes, of a file name and of each component of a member's path
MAX_MEMBER_PATH = 1024  # bytes, of a member's whole path (the folders above it add more)
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What the archive libraries raise on damaged data (truncated, corrupt, lying about sizes).
# OSErrors without an errno (gzip.BadGzipFile) are damage too; with one, the disk failed.
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError)
ARCHIVE_SUFFIXES = {".zip": "zip", ".tar.gz": "tar.gz", ".tgz": "tar.gz"}
DEFAULT_ENTRYPOINT = "train.py"


@dataclass(frozen=True)
class CheckedUpload:
    filename: str
    kind: str  # "python", "zip" or "tar.gz"
    entrypoint: str  # relative to the files folder, posix separators
    has_requirements: bool


def check_filename(filename: str) -> str:
    """The filename as sent, if it is a plain name; a clear 400 otherwise."""
    if not filename:
        raise BadRequest("The file part has no filename; send it as a file (curl -F file=@train.py).")
    if "\x00" in filename or any(ord(c) < 32 for c in filename):
        raise BadRequest("The filename contains NUL or control characters.")
    if "/" in filename or "\\" in filename or filename in {".", ".."}:
        raise BadRequest(f"The filename {filename!r} contains a path; send a plain name such as train.py.")
    if len(filename.encode("utf-8")) > MAX_FILENAME:
        raise BadRequest(f"The filename is longer than {MAX_FILENAME} bytes.")
    return filename


def kind_of(filename: str) -> str:
    lowered = filename.lower()
    if lowered.endswith(".py"):
        return "python"
    for suffix, kind in ARCHIVE_SUFFIXES.items():
        if lowered.endswith(suffix):
            return kind
    raise BadRequest(f"{filename!r} is neither a Python script (.py) nor a project archive (.zip, .tar.gz).")


def check_python_source(data: bytes, filename: str) -> None:
    if b"\x00" in data:
        raise BadRequest(f"{filename} is not a Python file: it contains binary data.")
    try:
        source = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"{filename} is not a Python file: it is not UTF-8 text.") from None
    try:
        ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise BadRequest(f"{filename} is not valid Python: line {e.lineno}: {e.msg}.") from None


def new_storage_dir(uploads: Path) -> tuple[str, Path]:
    key = secrets.token_hex(16)
    path = uploads / key
    path.mkdir(parents=True)
    return key, path


def store(
    original: Path, filename: str, entrypoint: str | None, target: Path, max_unpacked: int
) -> CheckedUpload:
    """Check ``original`` and lay it out in ``target`` (moving the file there)."""
    kind = kind_of(filename)
    files = target / "files"
    files.mkdir()
    if kind == "python":
        if entrypoint not in (None, "", filename):
            raise BadRequest("entrypoint applies to project archives only.")
        data = original.read_bytes()
        check_python_source(data, filename)
        # Its inline script metadata (PEP 723), if any, is its requirements.txt.
        metadata = inline_metadata.read(data.decode("utf-8-sig"), filename)
        os.replace(original, target / "original")
        shutil.copyfile(target / "original", files / filename)
        if metadata is None or not metadata.dependencies:
            return CheckedUpload(filename, kind, filename, has_requirements=False)
        text = inline_metadata.requirements_text(metadata, filename)
        (files / "requirements.txt").write_text(text, encoding="utf-8")
        return CheckedUpload(filename, kind, filename, has_requirements=True)
    members = _zip_members(original) if kind == "zip" else _tar_members(original)
    _check_layout(members)
    root = _common_root(members, entrypoint or DEFAULT_ENTRYPOINT)
    entry = _entrypoint(members, root, entrypoint or DEFAULT_ENTRYPOINT, filename)
    _check_total(members, max_unpacked)
    try:
        _extract(_zip_entries(original) if kind == "zip" else _tar_entries(original), files, root)
    except DAMAGED as e:
        raise BadRequest(f"{filename} is damaged and cannot be unpacked ({_describe(e)}).") from None
    except OSError as e:
        if e.errno is not None:
            raise  # the disk failed (full, read-only): the server's problem, not the upload's
        raise BadRequest(f"{filename} is damaged and cannot be unpacked ({_describe(e)}).") from None
    os.replace(original, target / "original")
    source = (files / entry).read_bytes()
    check_python_source(source, entry)
    return CheckedUpload(filename, kind, entry, has_requirements=(files / "requirements.txt").is_file())


@dataclass(frozen=True)
class _Member:
    name: str  # normalised posix path
    size: int
    is_dir: bool


def _safe_name(raw: str, archive: str) -> str:
    """The member's normalised path; '' for the archive's own top folder ('.', './')."""
    if "\x00" in raw or "\\" in raw:
        raise BadRequest(f"The archive member {raw!r} has an invalid name (NUL or backslash).")
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise BadRequest(f"The archive member {raw!r} points outside its folder; {archive} is refused.")
    name = str(path).strip("/")
    if name == ".":
        return ""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_MEMBER_PATH or any(len(part) > MAX_FILENAME for part in encoded.split(b"/")):
        raise BadRequest(
            f"The archive member {raw[:80]!r}... has a name longer than {MAX_FILENAME} bytes "
            f"(or a path over {MAX_MEMBER_PATH}); shorten it."
        )
    return name


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _zip_members(path: Path) -> list[_Member]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise BadRequest("The file is not a valid .zip archive.") from None
    _check_count(infos)
    members = []
    for info in infos:
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BadRequest(f"The archive member {info.filename!r} is a link; links are refused.")
        if info.flag_bits & 0x1:
            raise BadRequest(
                f"The archive member {info.filename!r} is encrypted; pack it without a password."
            )
        if info.compress_type not in ZIP_METHODS:
            raise BadRequest(
                f"The archive member {info.filename!r} uses an unsupported compression method "
                f"({info.compress_type}); use deflate."
            )
        # ZipInfo.is_dir() fails on an empty name (IndexError); a folder's name ends with /.
        is_dir = info.filename.endswith("/")
        members += _member(_safe_name(info.filename, "the .zip"), info.filename, info.file_size, is_dir)
    return members


def _member(name: str, raw: str, size: int, is_dir: bool) -> list[_Member]:
    if name:
        return [_Member(name, size, is_dir)]
    if not is_dir:
        raise BadRequest(f"The archive has a file with an empty name ({raw!r}).")
    return []  # the archive's own top folder


def _tar_members(path: Path) -> list[_Member]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            infos = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        raise BadRequest("The file is not a valid .tar.gz archive (or it is truncated).") from None
    _check_count(infos)
    members = []
    for info in infos:
        if info.issym() or info.islnk():
            raise BadRequest(f"The archive member {info.name!r} is a link; links are refused.")
        if info.issparse():
            raise BadRequest(f"The archive member {info.name!r} is a sparse file; pack it without --sparse.")
        if not (info.isfile() or info.isdir()):
            raise BadRequest(f"The archive member {info.name!r} is not a regular file or folder.")
        members += _member(_safe_name(info.name, "the .tar.gz"), info.name, info.size, info.isdir())
    return members


def _check_count(infos: Sized) -> None:
    if len(infos) > MAX_MEMBERS:
        raise BadRequest(f"The archive has more than {MAX_MEMBERS} members.")


def _check_layout(members: list[_Member]) -> None:
    """Each path is one file or one folder, once: what a folder on disk can hold.

    Refused, rather than resolved by order: a name that is a file twice, a file and a folder
    (``x`` and ``x/``), or a file with members under it (``x`` and ``x/y``).
    """
    files: set[str] = set()
    folders: set[str] = set()
    for member in members:
        parts = member.name.split("/")
        parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if member.is_dir:
            parents.add(member.name)
        elif member.name in files:
            raise BadRequest(f"The archive has {member.name!r} twice; keep one.")
        else:
            files.add(member.name)
        folders |= parents
    clash = files & folders
    if clash:
        name = min(clash)
        raise BadRequest(f"The archive has {name!r} both as a file and as a folder; keep one.")


def _check_total(members: list[_Member], max_unpacked: int) -> None:
    total = sum(m.size for m in members)
    if total > max_unpacked:
        raise PayloadTooLarge(
            f"The archive unpacks to {total // (1024 * 1024)} MB, over the "
            f"{max_unpacked // (1024 * 1024)} MB limit (TRAINFLOW_MAX_UNPACKED_MB)."
        )


def _common_root(members: list[_Member], entrypoint: str) -> str:
    """'' when the entry point is at the top; 'proj' when everything sits in one folder 'proj'."""
    names = {m.name for m in members if not m.is_dir}
    if entrypoint in names:
        return ""
    tops = {name.split("/", 1)[0] for name in {m.name for m in members}}
    if len(tops) == 1:
        (top,) = tops
        if f"{top}/{entrypoint}" in names:
            return top
    return ""


def _entrypoint(members: list[_Member], root: str, entrypoint: str, archive: str) -> str:
    entry = _safe_name(entrypoint, "the entrypoint")
    if not entry.endswith(".py"):
        raise BadRequest(f"The entrypoint {entrypoint!r} is not a .py file.")
    full = f"{root}/{entry}" if root else entry
    if full not in {m.name for m in members if not m.is_dir}:
        raise BadRequest(f"{archive} has no {entry}; name the script to run with the entrypoint field.")
    return entry


def _relative(name: str, root: str) -> str | None:
    if not root:
        return name
    if name == root:
        return None
    return name[len(root) + 1 :] if name.startswith(root + "/") else None


def _zip_entries(path: Path) -> Iterator[tuple[str, bool, Callable[[], IO[bytes] | None]]]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            yield info.filename, info.filename.endswith("/"), functools.partial(archive.open, info)


def _tar_entries(path: Path) -> Iterator[tuple[str, bool, Callable[[], IO[bytes] | None]]]:
    with tarfile.open(path, "r:gz") as archive:
        for info in archive:
            yield info.name, info.isdir(), functools.partial(archive.extractfile, info)


def _extract(
    entries: Iterator[tuple[str, bool, Callable[[], IO[bytes] | None]]], files: Path, root: str
) -> None:
    """Write each (already checked) member to the path we compute for it under ``files``."""
    for raw_name, is_dir, open_member in entries:
        relative = _relative(_safe_name(raw_name, "the archive"), root)
        if not relative:
            continue
        destination = files / relative
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = open_member()
        if source is None:
            continue
        with source, open(destination, "xb") as sink:
            shutil.copyfileobj(source, sink)
