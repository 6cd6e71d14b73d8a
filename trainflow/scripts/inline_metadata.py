"""A single-file script's inline metadata (PEP 723): the packages it needs, read at upload.

A ``.py`` upload may open with a block such as::

    # /// script
    # requires-python = ">=3.10"
    # dependencies = ["tqdm>=4", "numpy"]
    # ///

It is found with the PEP's reference regular expression and read as TOML (:mod:`tomllib`).
The dependencies become the script's ``requirements.txt`` (written beside it by
:func:`requirements_text`), so the job's environment is built exactly as for a project archive
with one: the same venv cache key, sandboxed build and executors. Anything wrong with the block
is a 400 at upload that names the line: a second block, TOML that does not parse, a dependency
that is not a PEP 508 requirement, a ``requires-python`` that is not a version specifier or
that excludes the server's Python (every job runs on it).
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from trainflow.errors import BadRequest

# The PEP's reference implementation, as it is written there.
REGEX = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"
MAX_DEPENDENCIES = 500
_TOML_LINE = re.compile(r"at line (\d+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class InlineMetadata:
    """What a script's ``script`` block says (``dependencies`` in the order written)."""

    dependencies: list[str]
    requires_python: str | None
    line: int  # where the block opens, from 1


def read(source: str, filename: str) -> InlineMetadata | None:
    """The script's ``script`` block, checked; None if it has none. 400 naming the line otherwise."""
    blocks = [m for m in re.finditer(REGEX, source) if m.group("type") == "script"]
    if not blocks:
        return None
    first = _line_of(source, blocks[0].start())
    if len(blocks) > 1:
        raise _bad(
            filename,
            _line_of(source, blocks[1].start()),
            f"a second `# /// script` block (the first opens on line {first}); a script has one",
        )
    block = blocks[0]
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in block.group("content").splitlines(keepends=True)
    )
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as e:
        found = _TOML_LINE.search(str(e))
        # Lines of the TOML are the block's, after its opening line; "at end of document": its last.
        line = first + (int(found.group(1)) if found else len(block.group("content").splitlines()))
        reason = str(e).split(" (at ", 1)[0]
        raise _bad(filename, line, f"the `# /// script` block is not valid TOML: {reason}") from None
    lines = source.splitlines()
    dependencies = _dependencies(data.get("dependencies", []), filename, first, lines)
    requires_python = _requires_python(data.get("requires-python"), filename, first, lines)
    return InlineMetadata(dependencies, requires_python, first)


def requirements_text(metadata: InlineMetadata, filename: str) -> str:
    """The ``requirements.txt`` a job's environment is built from: one requirement a line."""
    header = f"# The dependencies of {filename}'s inline script metadata (PEP 723), line {metadata.line}.\n"
    return header + "".join(f"{dependency}\n" for dependency in metadata.dependencies)


def _dependencies(value: object, filename: str, first: int, lines: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(
            filename, _key_line(lines, first, "dependencies"), "`dependencies` must be a list of strings"
        )
    if len(value) > MAX_DEPENDENCIES:
        raise _bad(
            filename,
            _key_line(lines, first, "dependencies"),
            f"`dependencies` lists {MAX_DEPENDENCIES} packages at most",
        )
    checked = []
    for item in value:
        line = _value_line(lines, first, item)
        # One requirement a line of requirements.txt: no newline may smuggle in a pip option.
        if _CONTROL.search(item) or item.strip().startswith("-"):
            raise _bad(filename, line, f"{item!r} is not a package requirement")
        try:
            Requirement(item)
        except InvalidRequirement as e:
            raise _bad(filename, line, f"{item!r} is not a valid requirement ({e})") from None
        checked.append(item.strip())
    return checked


def _requires_python(value: object, filename: str, first: int, lines: list[str]) -> str | None:
    if value is None:
        return None
    line = _key_line(lines, first, "requires-python")
    if not isinstance(value, str):
        raise _bad(filename, line, '`requires-python` must be a string such as ">=3.10"')
    try:
        specifier = SpecifierSet(value)
    except InvalidSpecifier:
        raise _bad(filename, line, f"`requires-python` {value!r} is not a version specifier") from None
    running = ".".join(str(part) for part in sys.version_info[:3])
    if not specifier.contains(running, prereleases=True):
        raise _bad(
            filename,
            line,
            f"`requires-python` {value!r} excludes Python {running}, which this server runs every job with",
        )
    return value


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _key_line(lines: list[str], first: int, key: str) -> int:
    """The line of the block where ``key`` is set (the block's first line if not found)."""
    pattern = re.compile(rf"^#\s*{re.escape(key)}\s*=")
    for number in range(first, len(lines) + 1):
        if pattern.match(lines[number - 1]):
            return number
        if number > first and lines[number - 1] == "# ///":
            break
    return first


def _value_line(lines: list[str], first: int, value: str) -> int:
    """The line of the block holding ``value`` as a string (the ``dependencies`` line if none)."""
    for number in range(first, len(lines) + 1):
        text = lines[number - 1]
        if f'"{value}"' in text or f"'{value}'" in text:
            return number
        if number > first and text == "# ///":
            break
    return _key_line(lines, first, "dependencies")


def _bad(filename: str, line: int, reason: str) -> BadRequest:
    return BadRequest(f"{filename} line {line}: {reason}.", line=line)
