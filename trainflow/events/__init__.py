"""Live events: the bus that announces each job's events, the hub, and the streams.

The event log itself (:mod:`trainflow.runner.eventlog`), the notices' publishers
(:mod:`trainflow.runner.notice`) and the progress parser (:mod:`trainflow.runner.progress`) live
in :mod:`trainflow.runner`, standard library only, because the job supervisor uses them too.
"""
