"""Every archive shape is refused with a 4xx that says why, never a 500, and leaves nothing (issue 10).

Each shape goes through the real upload endpoint. Before issue 10, `x/` then `x` in a zip, a file
then a folder of the same name, and a file with members under it all answered 500.
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.scripts.test_upload import SCRIPTS, TRAIN_PY, browser_body, post_raw, uploads_left

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def post_file(client, user, filename, content):  # type: ignore[no-untyped-def]
    # A body built here: the test client spools a large file tuple to a file it never closes.
    body = browser_body(filename=filename, content=content, content_type="application/octet-stream")
    return post_raw(client, user, body)


def zip_of(*members: tuple[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip with `members` in this order; a name ending in / is a folder. Duplicates allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we mean to write
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, content in members:
                archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return buffer.getvalue()


def tar_of(*members: tuple[str, bytes | str]) -> bytes:
    """A .tar.gz with `members` in order: bytes are files, 'dir' a folder, ('link:...') others."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, bytes):
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
                continue
            kind, _, target = content.partition(":")
            info.type = {
                "dir": tarfile.DIRTYPE,
                "hardlink": tarfile.LNKTYPE,
                "symlink": tarfile.SYMTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[kind]
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def patched_zip(offsets: dict[str, int], value: int) -> bytes:
    """A one-member zip with a 2-byte field patched in its local and central headers."""
    data = bytearray(zip_of(("train.py", TRAIN_PY)))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, local + offsets["local"], value)
    struct.pack_into("<H", data, central + offsets["central"], value)
    return bytes(data)


def corrupted_zip() -> bytes:
    """Intact headers, damaged data: only reading the member finds it (bad CRC)."""
    data = zip_of(("train.py", TRAIN_PY), ("data.bin", b"A" * 100))
    return data.replace(b"A" * 100, b"B" * 100)


def sparse_tar(tmp_path: Path) -> bytes:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar makes the sparse archive")
    folder = tmp_path / "sparse"
    folder.mkdir()
    (folder / "train.py").write_bytes(TRAIN_PY)
    with open(folder / "holes.bin", "wb") as f:
        f.truncate(1024 * 1024)
        f.write(b"end")
    target = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "--sparse", "-czf", str(target), "-C", str(folder), "."], check=True)
    return target.read_bytes()


def big_tar() -> bytes:
    import os

    return tar_of(("train.py", TRAIN_PY), ("data.bin", os.urandom(200_000)))


LONG = "d" * 200
SHAPES = [
    # (id, filename, archive bytes or a maker taking tmp_path, status, words in the message)
    ("zip-folder-then-file", "p.zip", zip_of(("x/", b""), ("x", b"1"), ("train.py", TRAIN_PY)), 400, "both"),
    ("zip-file-then-folder", "p.zip", zip_of(("x", b"1"), ("x/", b""), ("train.py", TRAIN_PY)), 400, "both"),
    (
        "zip-file-then-child",
        "p.zip",
        zip_of(("x", b"1"), ("x/y.py", b"1"), ("train.py", TRAIN_PY)),
        400,
        "both",
    ),
    (
        "zip-child-then-file",
        "p.zip",
        zip_of(("x/y.py", b"1"), ("x", b"1"), ("train.py", TRAIN_PY)),
        400,
        "both",
    ),
    (
        "zip-duplicate-file",
        "p.zip",
        zip_of(("train.py", TRAIN_PY), ("train.py", b"print(2)\n")),
        400,
        "twice",
    ),
    ("tar-duplicate-file", "p.tar.gz", tar_of(("train.py", TRAIN_PY), ("train.py", TRAIN_PY)), 400, "twice"),
    (
        "tar-file-then-folder",
        "p.tar.gz",
        tar_of(("x", b"1"), ("x", "dir"), ("train.py", TRAIN_PY)),
        400,
        "both",
    ),
    ("zip-empty-name", "p.zip", zip_of(("", b"1"), ("train.py", TRAIN_PY)), 400, "empty name"),
    ("zip-dot-as-file", "p.zip", zip_of((".", b"1"), ("train.py", TRAIN_PY)), 400, "empty name"),
    ("zip-backslash", "p.zip", zip_of(("a\\b.py", b"1"), ("train.py", TRAIN_PY)), 400, "backslash"),
    ("zip-long-name", "p.zip", zip_of(("a" * 300 + ".py", b"1"), ("train.py", TRAIN_PY)), 400, "longer than"),
    (
        "zip-long-path",
        "p.zip",
        zip_of(("/".join([LONG] * 6) + "/x.py", b"1"), ("train.py", TRAIN_PY)),
        400,
        "longer",
    ),
    ("tar-long-name", "p.tar.gz", tar_of(("b" * 300, b"1"), ("train.py", TRAIN_PY)), 400, "longer than"),
    ("tar-hardlink", "p.tar.gz", tar_of(("train.py", TRAIN_PY), ("h.py", "hardlink:train.py")), 400, "link"),
    (
        "tar-hardlink-outside",
        "p.tar.gz",
        tar_of(("train.py", TRAIN_PY), ("h", "hardlink:/etc/passwd")),
        400,
        "link",
    ),
    ("tar-symlink", "p.tar.gz", tar_of(("train.py", TRAIN_PY), ("s", "symlink:/")), 400, "link"),
    ("tar-fifo", "p.tar.gz", tar_of(("train.py", TRAIN_PY), ("f", "fifo")), 400, "regular file"),
    ("tar-device", "p.tar.gz", tar_of(("train.py", TRAIN_PY), ("c", "chardev")), 400, "regular file"),
    ("tar-sparse", "p.tar.gz", sparse_tar, 400, "sparse"),
    ("gzip-not-tar", "p.tar.gz", gzip.compress(b"just some text\n" * 100), 400, ".tar.gz"),
    ("tar-truncated", "p.tar.gz", lambda _: big_tar()[:50_000], 400, ".tar.gz"),
    ("tgz-random-bytes", "p.tgz", b"\x1f\x8b\x08\x00" + b"\xff" * 500, 400, ".tar.gz"),
    ("zip-truncated", "p.zip", zip_of(("train.py", TRAIN_PY * 100))[:300], 400, ".zip"),
    ("zip-bad-crc", "p.zip", corrupted_zip(), 400, "damaged"),
    ("zip-encrypted", "p.zip", patched_zip({"local": 6, "central": 8}, 0x1), 400, "encrypted"),
    ("zip-unknown-method", "p.zip", patched_zip({"local": 8, "central": 10}, 99), 400, "compression method"),
]


@pytest.mark.parametrize(
    ("filename", "archive", "status", "words"),
    [pytest.param(*shape[1:], id=shape[0]) for shape in SHAPES],
)
def test_every_archive_shape_is_a_clear_4xx_and_leaves_nothing(
    client, alice, settings, tmp_path, filename, archive, status, words
):
    content = archive(tmp_path) if callable(archive) else archive
    response = post_file(client, alice, filename, content)
    assert response.status_code == status, response.json
    assert response.mimetype == "application/json"
    assert words in response.json["error"]["message"]
    assert uploads_left(settings) == []
    assert client.get(SCRIPTS, headers=alice.basic).json["total"] == 0


def test_a_zip_bomb_is_413_and_leaves_nothing(app, client, alice, settings):
    app.config["TRAINFLOW"] = settings.replace(max_unpacked_mb=10)
    bomb = zip_of(
        ("train.py", TRAIN_PY), ("zeros.bin", b"\0" * (50 * 1024 * 1024)), compression=zipfile.ZIP_DEFLATED
    )
    assert len(bomb) < 100 * 1024  # a ratio of more than 500 to 1
    response = post_file(client, alice, "bomb.zip", bomb)
    assert response.status_code == 413
    assert "TRAINFLOW_MAX_UNPACKED_MB" in response.json["error"]["message"]
    assert uploads_left(settings) == []


def test_an_archive_of_dot_unpacks(client, alice, settings, tmp_path):
    """`tar -czf p.tgz .` names its members ./train.py and has a ./ folder: that is fine."""
    response = post_file(
        client, alice, "p.tar.gz", tar_of((".", "dir"), ("./train.py", TRAIN_PY), ("./lib/", "dir"))
    )
    assert response.status_code == 201, response.json
    assert response.json["entrypoint"] == "train.py"
