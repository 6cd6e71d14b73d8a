"""Progress from a job's output: tqdm-style bars, and an explicit line a script can print.

Standard library only: the job supervisor imports it.

A bar redrawn with ``\\r`` is read each time it is redrawn (:func:`parse_bar`); the supervisor
turns those into ``progress`` events and keeps only the bar's final state as a log line.

A script that wants to report progress itself prints one line (to stdout or stderr)::

    trainflow:progress {"current": 30, "total": 100, "desc": "epochs"}

with any of ``current`` (required), ``total``, ``rate`` (per second), ``eta_s`` and ``desc``.
Such a line becomes a progress event and not a log line.
"""

from __future__ import annotations

import json
import re
from typing import Any

MARKER = "trainflow:progress "
_FIELDS = {"current": float, "total": float, "rate": float, "eta_s": float, "desc": str}
_SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

# tqdm's default format: "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining},
# {rate_fmt}{postfix}]", and without a total "{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]".
_NUMBER = r"\d+(?:\.\d+)?[kMGTP]?"
_BAR = re.compile(
    rf"""^(?:(?P<desc>.*?):\s*)?
    (?:(?P<percent>\d+)%\|[^|]*\|\s*)?
    (?P<current>{_NUMBER})(?:/(?P<total>{_NUMBER}))?(?P<unit>[^\s\[]*)\s*
    \[(?P<elapsed>[\d:]+)(?:<(?P<remaining>[\d:?]+))?,\s*
    (?P<rate>{_NUMBER}|\?)\s*(?P<rate_unit>\S*?)(?:,.*)?\]\s*$""",
    re.VERBOSE,
)


def parse_marker(line: str) -> dict[str, Any] | None:
    """The progress a ``trainflow:progress {...}`` line reports, or None if it is not one."""
    if not line.startswith(MARKER):
        return None
    try:
        data = json.loads(line[len(MARKER) :])
    except ValueError:
        return None
    if not isinstance(data, dict) or "current" not in data:
        return None
    out: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        value = data.get(name)
        if value is None:
            continue
        try:
            out[name] = _number(kind(value)) if kind is float else str(value)[:200]
        except (TypeError, ValueError):
            return None
    return out


def parse_bar(text: str) -> dict[str, Any] | None:
    """The progress a tqdm-style bar shows, or None if ``text`` does not look like one."""
    match = _BAR.match(text.strip())
    if match is None:
        return None
    out: dict[str, Any] = {"current": _scaled(match["current"])}
    if match["total"]:
        out["total"] = _scaled(match["total"])
    rate = match["rate"]
    if rate != "?":
        value = _scaled(rate)
        # tqdm shows "s/it" instead of "it/s" when an iteration takes more than a second.
        per_second = 1 / value if match["rate_unit"].startswith("s/") and value else value
        out["rate"] = round(per_second, 6)
    if match["remaining"] and "?" not in match["remaining"]:
        out["eta_s"] = _seconds(match["remaining"])
    elif "total" in out and out.get("rate"):
        out["eta_s"] = round(max(out["total"] - out["current"], 0) / out["rate"], 3)
    desc = (match["desc"] or "").strip()
    if desc:
        out["desc"] = desc[:200]
    return out


def _scaled(text: str) -> float | int:
    suffix = text[-1] if text[-1] in _SCALE else ""
    value = float(text[:-1] if suffix else text) * _SCALE[suffix]
    return _number(value)


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _seconds(text: str) -> int:
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return total
