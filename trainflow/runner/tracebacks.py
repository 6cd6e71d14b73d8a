"""What a failed job's last lines on stderr say of why it failed (standard library only).

Python ends a traceback with the exception's line, so a job that died of a missing import
says ``ModuleNotFoundError: No module named 'sklearn'`` among its last stderr lines. The
supervisor keeps those lines (:data:`TAIL_LINES`) and, when the job failed, puts the module in
its final status (``missing_module``); the server turns it into a hint on how to declare the
package (``trainflow.jobs.hints``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TAIL_LINES = 20
_MISSING = re.compile(r"^ModuleNotFoundError: No module named '([A-Za-z_][A-Za-z0-9_.]{0,199})'")


def missing_module(last_stderr_lines: Iterable[str]) -> str | None:
    """The module a ``ModuleNotFoundError`` among these lines names (the last one); None if none."""
    for line in reversed(list(last_stderr_lines)):
        found = _MISSING.match(line.strip())
        if found:
            return found.group(1)
    return None
