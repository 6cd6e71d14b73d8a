"""What runs beside a job, inside or around its sandbox: standard library only.

The supervisor (:mod:`.supervisor`, started as ``python -m trainflow.runner.supervisor``)
runs one job and records it: its event log (:mod:`.eventlog`), the notices that wake followers
(:mod:`.notice`), tqdm-style progress (:mod:`.progress`), the sandbox (:mod:`.sandbox`) and
the limits (:mod:`.limits`, :mod:`.enforcement`). :mod:`.launcher` runs inside the sandbox as a
plain script (``python -I -S launcher.py``) and loads its siblings (:mod:`.landlock`,
:mod:`.limits`) from this folder, never through the package.

Nothing here imports the rest of trainflow or a third-party package, so a supervisor starts in
tens of milliseconds and holds a few MB; the web process imports these modules too (the event
log, the notices). An import contract in ``pyproject.toml`` (``make lint``) holds it so.
"""
