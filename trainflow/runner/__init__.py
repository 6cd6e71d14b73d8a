"""What runs beside a job, inside or around its sandbox: standard library only.

The supervisor (:mod:`trainflow.jobs.supervisor`) imports :mod:`.sandbox`; :mod:`.launcher`
runs inside the sandbox as a plain script (``python -I -S launcher.py``) and loads its
siblings (:mod:`.landlock`, :mod:`.limits`) from this folder, never through the package.
"""
