"""A single-file script's inline metadata (PEP 723): read and checked at upload (issue 14)."""

from __future__ import annotations

import sys

import pytest

from tests.scripts.test_upload import post_file
from trainflow.errors import BadRequest
from trainflow.scripts import inline_metadata

SCRIPTS = "/ajax-api/2.0/mlflow/train/scripts"
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"

SCRIPT = b"""\
#!/usr/bin/env python
# /// script
# requires-python = ">=3.10"
# dependencies = [
#   "tqdm>=4",
#   "numpy",  # any version
# ]
# ///
import tqdm
"""


def read(source: str) -> inline_metadata.InlineMetadata | None:
    return inline_metadata.read(source, "train.py")


def refusal(source: str) -> str:
    with pytest.raises(BadRequest) as raised:
        read(source)
    return str(raised.value)


# -- reading -----------------------------------------------------------------------------------------


def test_a_block_gives_its_dependencies_and_python():
    metadata = read(SCRIPT.decode())
    assert metadata is not None
    assert metadata.dependencies == ["tqdm>=4", "numpy"]
    assert metadata.requires_python == ">=3.10"
    assert metadata.line == 2


def test_a_script_without_a_block_has_no_metadata():
    assert read("import tqdm\n# /// not closed\n") is None


def test_a_block_of_another_type_is_not_the_script_block():
    assert read('# /// pyproject\n# dependencies = ["x"]\n# ///\n') is None


def test_an_empty_comment_line_inside_the_block_is_allowed():
    metadata = read('# /// script\n# dependencies = [\n#\n#   "tqdm",\n# ]\n# ///\n')
    assert metadata is not None
    assert metadata.dependencies == ["tqdm"]


def test_the_requirements_file_lists_one_requirement_a_line():
    metadata = read(SCRIPT.decode())
    assert metadata is not None
    text = inline_metadata.requirements_text(metadata, "train.py")
    assert text.splitlines()[1:] == ["tqdm>=4", "numpy"]
    assert text.startswith("# ")


# -- refusals name the line -------------------------------------------------------------------------


def test_toml_that_does_not_parse_names_its_line():
    message = refusal('print(1)\n# /// script\n# dependencies = ["tqdm"\n# ///\n')
    assert message.startswith("train.py line 3: ")
    assert "not valid TOML" in message


def test_toml_broken_mid_block_names_that_line():
    message = refusal("# /// script\n# a = 1\n# b = = 2\n# ///\n")
    assert message.startswith("train.py line 3: ")


def test_a_bad_requirement_names_its_line():
    message = refusal(
        '# /// script\n# dependencies = [\n#   "tqdm",\n#   "not a requirement!",\n# ]\n# ///\n'
    )
    assert message.startswith("train.py line 4: ")
    assert "'not a requirement!' is not a valid requirement" in message


def test_dependencies_must_be_a_list_of_strings():
    message = refusal("# /// script\n# dependencies = 'tqdm'\n# ///\n")
    assert message == "train.py line 2: `dependencies` must be a list of strings."


def test_a_requirement_cannot_smuggle_a_pip_option():
    assert "is not a package requirement" in refusal(
        '# /// script\n# dependencies = ["tqdm\\n--index-url=http://x"]\n# ///\n'
    )
    assert "is not a package requirement" in refusal('# /// script\n# dependencies = ["-e ."]\n# ///\n')


def test_a_second_block_is_refused():
    block = '# /// script\n# dependencies = ["tqdm"]\n# ///\n'
    message = refusal(block + "x = 1\n" + block)
    assert message.startswith("train.py line 5: a second `# /// script` block (the first opens on line 1)")


def test_requires_python_must_be_a_specifier():
    message = refusal('# /// script\n# requires-python = "three"\n# ///\n')
    assert message == "train.py line 2: `requires-python` 'three' is not a version specifier."


def test_requires_python_that_excludes_the_servers_python_is_refused():
    message = refusal(f'# /// script\n# requires-python = "<{RUNNING}"\n# ///\n')
    assert message.startswith("train.py line 2: ")
    assert "which this server runs every job with" in message


# -- at upload -----------------------------------------------------------------------------------------


def test_an_upload_with_dependencies_gets_a_requirements_file(client, alice, settings):
    response = post_file(client, alice, "train.py", SCRIPT)
    assert response.status_code == 201, response.json
    assert response.json["has_requirements"] is True
    (requirements,) = settings.uploads_dir.glob("*/files/requirements.txt")
    assert requirements.read_text().splitlines()[1:] == ["tqdm>=4", "numpy"]
    # The script itself comes back as it was uploaded.
    content = client.get(f"{SCRIPTS}/{response.json['script']}/content", headers=alice.basic)
    assert content.data == SCRIPT
    content.close()


def test_an_upload_whose_block_lists_nothing_needs_no_environment(client, alice):
    response = post_file(client, alice, "train.py", b"# /// script\n# dependencies = []\n# ///\nprint(1)\n")
    assert response.status_code == 201
    assert response.json["has_requirements"] is False


def test_a_malformed_block_is_a_400_naming_the_line(client, alice, settings):
    source = b'import os\n# /// script\n# dependencies = ["tqdm", "bad requirement!!"]\n# ///\n'
    response = post_file(client, alice, "train.py", source)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert response.json["error"]["message"].startswith("train.py line 3: 'bad requirement!!'")
    assert response.json["error"]["line"] == 3
    assert list(settings.uploads_dir.glob("*/files")) == []  # nothing of it is kept


def test_another_user_does_not_see_the_script(client, alice, bob):
    script = post_file(client, alice, "train.py", SCRIPT).json["script"]
    assert client.get(f"{SCRIPTS}/{script}", headers=bob.basic).status_code == 404
