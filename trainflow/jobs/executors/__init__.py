"""Where jobs run: the interface the scheduler talks to, and the executors behind it."""

from trainflow.jobs.executors.base import Executor, Exit, Launch, Observation, State, Watched

__all__ = ["Executor", "Exit", "Launch", "Observation", "State", "Watched"]
