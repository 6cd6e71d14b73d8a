"""Live events: each job's numbered event log, the bus that announces it, and the streams."""
