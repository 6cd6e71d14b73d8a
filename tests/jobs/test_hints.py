"""The hint for a job that died of a missing import (issue 14)."""

from __future__ import annotations

import pytest

from trainflow.jobs.hints import missing_module_hint, package_of
from trainflow.runner.tracebacks import missing_module


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("sklearn", "scikit-learn"),
        ("cv2", "opencv-python"),
        ("PIL.Image", "pillow"),
        ("yaml", "pyyaml"),
        ("tqdm", "tqdm"),
    ],
)
def test_import_names_map_to_their_packages(module, package):
    assert package_of(module) == package


def test_the_last_module_not_found_among_the_last_lines_is_named():
    lines = [
        "Traceback (most recent call last):",
        '  File "train.py", line 1, in <module>',
        "ModuleNotFoundError: No module named 'sklearn.ensemble'",
    ]
    assert missing_module(lines) == "sklearn.ensemble"


def test_other_failures_name_no_module():
    assert missing_module(["ValueError: No module named 'x'", "ImportError: cannot import name 'y'"]) is None


def test_a_single_file_is_shown_the_inline_block():
    hint = missing_module_hint("sklearn", is_single_file=True)
    assert hint is not None
    assert '# /// script\n# dependencies = ["scikit-learn"]\n# ///' in hint


def test_an_archive_is_told_of_its_requirements_file():
    hint = missing_module_hint("tqdm", is_single_file=False)
    assert hint is not None
    assert "add a line `tqdm` to the project's requirements.txt" in hint


@pytest.mark.parametrize("module", [None, 7, "", "x'); drop", "a b"])
def test_a_name_that_is_no_module_gets_no_hint(module):
    assert missing_module_hint(module, is_single_file=True) is None
