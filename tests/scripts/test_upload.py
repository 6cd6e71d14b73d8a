"""Uploading a training script or project archive (issue 4)."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest

UPLOAD = "/ajax-api/2.0/mlflow/train/upload"
SCRIPTS = "/ajax-api/2.0/mlflow/train/scripts"
TRAIN_PY = b"import mlflow\nprint('training')\n"
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"


def browser_body(
    filename="train.py", content=TRAIN_PY, field="file", content_type="text/x-python", boundary=BOUNDARY
):
    """The body exactly as a browser's FormData sends it."""
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def post_raw(client, user, body, content_type=f"multipart/form-data; boundary={BOUNDARY}"):
    return client.post(UPLOAD, data=body, headers={**user.basic, "Content-Type": content_type})


def post_file(client, user, filename, content, **fields):
    data = {"file": (io.BytesIO(content), filename), **fields}
    return client.post(UPLOAD, data=data, headers=user.basic, content_type="multipart/form-data")


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def make_tar(members, links=()):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def uploads_left(settings):
    """Every file under the uploads folder, temporary ones included."""
    root = settings.uploads_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_the_seeds_browser_request_works_byte_for_byte(client, alice):
    response = post_raw(client, alice, browser_body())
    assert response.status_code == 201, response.json
    body = response.json
    assert body["filename"] == "train.py" and body["kind"] == "python" and body["entrypoint"] == "train.py"
    assert body["size"] == len(TRAIN_PY)
    import hashlib

    assert body["sha256"] == hashlib.sha256(TRAIN_PY).hexdigest()
    assert isinstance(body["script"], int) and body["created_at"]
    assert response.headers["Location"] == f"{SCRIPTS}/{body['script']}"


def test_bearer_works_too(client, alice):
    response = client.post(
        UPLOAD,
        data=browser_body(),
        headers={**alice.bearer(), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 201


def test_upload_needs_sign_in(client):
    response = client.post(
        UPLOAD, data=browser_body(), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert response.status_code == 401


def test_content_comes_back_as_uploaded(client, alice):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    response = client.get(f"{SCRIPTS}/{script}/content", headers=alice.basic)
    assert response.status_code == 200 and response.data == TRAIN_PY
    assert response.mimetype == "text/x-python"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response.close()


def test_a_script_whose_file_is_gone_is_a_json_404_not_a_500(client, alice, settings):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    for original in settings.uploads_dir.glob("*/original"):
        original.unlink()
    response = client.get(f"{SCRIPTS}/{script}/content", headers=alice.basic)
    assert response.status_code == 404
    assert "missing on the server" in response.json["error"]["message"]


@pytest.mark.parametrize(("maker", "name"), [(make_zip, "project.zip"), (make_tar, "project.tar.gz")])
def test_archives_unpack_with_their_entrypoint(client, alice, settings, maker, name):
    archive = maker({"train.py": TRAIN_PY, "requirements.txt": b"numpy\n", "pkg/util.py": b"X = 1\n"})
    response = post_file(client, alice, name, archive)
    assert response.status_code == 201, response.json
    assert response.json["entrypoint"] == "train.py" and response.json["has_requirements"] is True
    files = {p for p in uploads_left(settings) if "/files/" in p}
    assert {p.split("/files/")[1] for p in files} == {"train.py", "requirements.txt", "pkg/util.py"}


def test_an_archive_in_one_top_folder_and_a_named_entrypoint(client, alice):
    archive = make_zip({"proj/src/main.py": TRAIN_PY, "proj/README.md": b"hi"})
    response = post_file(client, alice, "proj.zip", archive, entrypoint="src/main.py")
    assert response.status_code == 201, response.json
    assert response.json["entrypoint"] == "src/main.py" and response.json["has_requirements"] is False
    missing = post_file(client, alice, "proj.zip", archive)
    assert missing.status_code == 400 and "train.py" in missing.json["error"]["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (browser_body(content=b""), None, 400, "empty"),
        (browser_body(field="upload"), None, 400, "'file'"),
        (f"--{BOUNDARY}--\r\n".encode(), None, 400, "'file'"),
        (browser_body(), "multipart/form-data", 400, "boundary"),
        (browser_body()[:-30], None, 400, "truncated"),
        (b"garbage without any boundary", None, 400, "truncated"),
        (browser_body(filename="notes.txt", content=b"hello"), None, 400, "neither a Python script"),
        (browser_body(content=b"\x00\x01binary"), None, 400, "binary"),
        (browser_body(content=b"def broken(:\n"), None, 400, "not valid Python: line 1"),
        (browser_body(content=b"\xff\xfe not utf8"), None, 400, "UTF-8"),
        (browser_body(filename="../../etc/train.py"), None, 400, "path"),
        (browser_body(filename="..\\\\train.py"), None, 400, "path"),  # an escaped backslash
        (browser_body(filename="tra\x00in.py"), None, 400, "NUL"),
        (browser_body(filename=""), None, 400, "filename"),
        (browser_body(), "application/json", 415, "multipart/form-data"),
        (browser_body(), "text/plain", 415, "multipart/form-data"),
    ],
)
def test_bad_uploads_are_refused_clearly_and_leave_nothing(
    client, alice, settings, body, content_type, status, words
):
    response = post_raw(client, alice, body, content_type or f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == status, response.json
    assert words in response.json["error"]["message"]
    assert uploads_left(settings) == []


@pytest.mark.parametrize(
    ("members", "links", "words"),
    [
        ({"../evil.py": b"x=1", "train.py": TRAIN_PY}, (), "outside"),
        ({"/etc/evil.py": b"x=1", "train.py": TRAIN_PY}, (), "outside"),
        ({"a/../../evil.py": b"x=1", "train.py": TRAIN_PY}, (), "outside"),
        ({"train.py": TRAIN_PY}, [("link.py", "/etc/passwd", tarfile.SYMTYPE)], "link"),
        ({"train.py": TRAIN_PY}, [("hard.py", "train.py", tarfile.LNKTYPE)], "link"),
        ({"train.py": TRAIN_PY}, [("fifo", "", tarfile.FIFOTYPE)], "regular file"),
    ],
)
def test_bad_archive_members_are_refused(client, alice, settings, tmp_path, members, links, words):
    response = post_file(client, alice, "p.tar.gz", make_tar(members, links))
    assert response.status_code == 400, response.json
    assert words in response.json["error"]["message"]
    assert uploads_left(settings) == []
    assert not (tmp_path / "evil.py").exists() and not (settings.resolved_data_dir / "evil.py").exists()


def test_zip_links_and_escapes_are_refused(client, alice, settings):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", TRAIN_PY)
        link = zipfile.ZipInfo("data")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc")
    response = post_file(client, alice, "p.zip", buffer.getvalue())
    assert response.status_code == 400 and "link" in response.json["error"]["message"]
    escape = post_file(client, alice, "p.zip", make_zip({"train.py": TRAIN_PY, "../../x.py": b"1"}))
    assert escape.status_code == 400 and "outside" in escape.json["error"]["message"]
    assert uploads_left(settings) == []


def test_not_an_archive(client, alice):
    response = post_file(client, alice, "p.zip", b"PK not really")
    assert response.status_code == 400 and ".zip" in response.json["error"]["message"]
    response = post_file(client, alice, "p.tar.gz", b"\x1f\x8b nope")
    assert response.status_code == 400 and ".tar.gz" in response.json["error"]["message"]


def test_the_size_limit_is_413(app, client, alice, settings):
    app.config["TRAINFLOW"] = settings.replace(max_upload_mb=1)
    big = b"x = 1\n" * (1024 * 1024 // 6 + 10)
    response = post_raw(client, alice, browser_body(content=big))
    assert response.status_code == 413
    assert (
        response.json["error"]["code"] == "payload_too_large" and "1 MB" in response.json["error"]["message"]
    )
    assert uploads_left(settings) == []


def test_a_zip_bomb_is_413(app, client, alice, settings):
    app.config["TRAINFLOW"] = settings.replace(max_unpacked_mb=1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.py", TRAIN_PY)
        archive.writestr("zeros.bin", b"\0" * (3 * 1024 * 1024))
    assert len(buffer.getvalue()) < 100_000
    response = post_file(client, alice, "bomb.zip", buffer.getvalue())
    assert response.status_code == 413 and "TRAINFLOW_MAX_UNPACKED_MB" in response.json["error"]["message"]
    assert uploads_left(settings) == []


def test_uploads_are_private_to_their_owner_and_admins(client, alice, bob, admin):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    post_file(client, bob, "train.py", TRAIN_PY)
    assert client.get(f"{SCRIPTS}/{script}", headers=bob.basic).status_code == 404
    assert client.get(f"{SCRIPTS}/{script}/content", headers=bob.basic).status_code == 404
    assert client.delete(f"{SCRIPTS}/{script}", headers=bob.basic).status_code == 404
    assert client.get(f"{SCRIPTS}/{script}", headers=admin.basic).json["owner"] == "alice"
    assert client.get(SCRIPTS, headers=alice.basic).json["total"] == 1
    assert client.get(SCRIPTS, headers=admin.basic).json["total"] == 2


def test_list_pages_newest_first(client, alice):
    ids = [post_file(client, alice, f"s{i}.py", TRAIN_PY).json["script"] for i in range(3)]
    page = client.get(f"{SCRIPTS}?page=1&size=2", headers=alice.basic).json
    assert page["total"] == 3 and [s["script"] for s in page["list"]] == ids[::-1][:2]
    assert client.get(f"{SCRIPTS}?size=1000", headers=alice.basic).status_code == 400


def test_delete_removes_the_files(client, alice, settings):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    assert uploads_left(settings)
    assert client.delete(f"{SCRIPTS}/{script}", headers=alice.basic).status_code == 204
    assert client.get(f"{SCRIPTS}/{script}", headers=alice.basic).status_code == 404
    assert client.delete(f"{SCRIPTS}/{script}", headers=alice.basic).status_code == 404
    assert uploads_left(settings) == []


def test_upload_is_documented_as_multipart(client):
    op = client.get("/api/openapi.json").json["paths"][UPLOAD]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert os.path.basename(UPLOAD) == "upload"
