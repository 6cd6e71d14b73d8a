"""What accounts announce, so that packages above them can act without accounts knowing them.

``user_deleting`` is sent (sender: the app) with ``user_id`` before a user's row is deleted, in
the request that deletes it: a receiver removes what the user owns (their jobs, scripts and
files), or raises an error from :mod:`trainflow.errors` to refuse the deletion.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

user_deleting = _signals.signal("user-deleting")
