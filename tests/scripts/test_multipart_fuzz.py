"""Generated multipart bodies against the upload route: never a 500, never debris (issue 11).

Odd part headers, parts with no name, repeated parts, bad boundaries, truncated bodies, wrong
Content-Length and huge headers. Every answer is a success or a 4xx JSON error, and nothing
is left under ``<data>/uploads/.incoming`` once the answer is in.
``TRAINFLOW_FUZZ_EXAMPLES`` sets the budget (300 by default, about half a minute here).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as budget
from hypothesis import strategies as st

from tests.scripts.test_upload import TRAIN_PY, UPLOAD, uploads_left

EXAMPLES = int(os.environ.get("TRAINFLOW_FUZZ_EXAMPLES", "300"))
BOUNDARY = "fuzzBoundary7MA4YWxk"

header_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF, exclude_characters="\r\n"), max_size=40
)
names = st.one_of(
    st.just("file"),
    st.just("entrypoint"),
    st.just(""),
    header_text,
    st.sampled_from(["file\x00", "FILE", 'fi"le', "file; name=other", "é", "file\\"]),
)


@st.composite
def dispositions(draw: st.DrawFn) -> bytes | None:
    """A Content-Disposition header line, odd or missing."""
    kind = draw(st.sampled_from(["file", "field", "no-name", "empty", "garbage", "missing", "star", "twice"]))
    name = draw(names)
    filename = draw(st.one_of(st.just("train.py"), header_text, st.just("../../x.py"), st.just("a.zip")))
    lines = {
        "file": f'form-data; name="{name}"; filename="{filename}"',
        "field": f'form-data; name="{name}"',
        "no-name": f'form-data; filename="{filename}"',
        "empty": "",
        "garbage": draw(header_text),
        "missing": None,
        "star": f"form-data; name=\"{name}\"; filename*=UTF-8''{filename}",
        "twice": f'form-data; name="{name}"; name="file"; filename="{filename}"',
    }
    line = lines[kind]
    if line is None:
        return None
    return ("Content-Disposition: " + line).encode("utf-8", "surrogatepass")


@st.composite
def parts(draw: st.DrawFn) -> bytes:
    headers = []
    disposition = draw(dispositions())
    if disposition is not None:
        headers.append(disposition)
    if draw(st.booleans()):
        headers.append(b"Content-Type: " + draw(header_text).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):
        headers.append(draw(st.binary(max_size=60)).replace(b"\r\n", b""))
    if draw(st.integers(0, 9)) == 0:  # a huge header
        headers.append(b"X-Big: " + b"a" * draw(st.integers(60_000, 300_000)))
    content = draw(
        st.one_of(st.just(TRAIN_PY), st.binary(max_size=200), st.just(b"print(1)\r\n--" + BOUNDARY.encode()))
    )
    separator = draw(st.sampled_from([b"\r\n", b"\n"]))
    return separator.join(headers) + separator + separator + content


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, int | None]:
    """(body, Content-Type, Content-Length to claim or None for the real one)."""
    boundary = draw(
        st.one_of(
            st.just(BOUNDARY),
            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80),
        )
    )
    body_boundary = (
        boundary if draw(st.integers(0, 4)) else draw(st.sampled_from(["other", "", BOUNDARY + "x"]))
    )
    chosen = draw(st.lists(parts(), min_size=0, max_size=4))
    if draw(st.booleans()):  # beside a good file part, so the odd ones are what the route must judge
        good = b'Content-Disposition: form-data; name="file"; filename="train.py"\r\n\r\n' + TRAIN_PY
        chosen.insert(draw(st.integers(0, len(chosen))), good)
    if draw(st.booleans()):  # a part repeated
        chosen = chosen + chosen[:1]
    dash = f"--{body_boundary}".encode()
    body = b"".join(dash + b"\r\n" + part + b"\r\n" for part in chosen)
    ending = draw(st.sampled_from([dash + b"--\r\n", dash + b"--", b"", dash + b"\r\n", b"--\r\n"]))
    body += ending
    if draw(st.integers(0, 3)) == 0:  # truncated anywhere
        body = body[: draw(st.integers(0, len(body)))]
    if draw(st.integers(0, 5)) == 0:
        body = draw(st.binary(max_size=300))
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                f"multipart/mixed; boundary={boundary}",
                "application/octet-stream",
                f"multipart/form-data; boundary={boundary}; charset=utf-8",
            ]
        )
    )
    length = draw(st.one_of(st.none(), st.integers(0, len(body) + 1000)))
    return body, content_type, length


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@budget(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(generated=bodies())
def test_a_generated_multipart_body_is_never_a_500_and_leaves_nothing(client, admin, settings, generated):
    body, content_type, length = generated
    overrides = {} if length is None else {"CONTENT_LENGTH": str(length)}
    response = client.post(
        UPLOAD,
        data=body,
        headers={**admin.basic, "Content-Type": content_type},
        environ_overrides=overrides,
    )
    assert response.status_code in (201, 400, 408, 413, 415), response.get_data()[:300]
    if response.status_code != 201:
        error = response.get_json()["error"]
        assert error["code"]
        assert error["message"]
    assert not [p for p in uploads_left(settings) if p.startswith(".incoming")]
