"""What the scripts package announces, so that jobs can keep a script they use.

``script_deleting`` is sent (sender: the app) with ``script_id`` before a script is deleted: a
receiver raises an error from :mod:`trainflow.errors` (a 409 Conflict) to keep it.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

script_deleting = _signals.signal("script-deleting")
