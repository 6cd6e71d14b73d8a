"""Shapes of the sweeps API.

A sweep's ``params`` take one of two shapes, chosen by ``strategy``; the request model takes
them as given and :func:`parse_space` checks them against the strategy's own model, so an error
names the exact field (``params.lr.low``) rather than every member of a union.
"""

from __future__ import annotations

import builtins
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic import model_validator as model_validator

from trainflow.api import validate
from trainflow.jobs.schemas import _NAME, JobOut, JobStatusName, _check_env

MAX_TRIALS = 1000  # trials per sweep: each is a job and an MLflow run, made in one request
MAX_VALUES = 100  # values of one grid parameter, or choices of one random one
MAX_PARAMS = 20

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
_METRIC = r"^[A-Za-z0-9_\-. /]{1,250}$"  # what MLflow accepts as a metric key


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid parameter name (letters, digits, _ . -)")
    return name


def _check_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, str) and len(value) > 6000:
        raise ValueError("is longer than 6000 characters")
    return value


ParamName = Annotated[str, AfterValidator(_check_name)]
Value = Annotated[Scalar, AfterValidator(_check_value)]
Number = Annotated[StrictInt | StrictFloat, AfterValidator(_check_value)]


class GridSpace(BaseModel):
    """``{"lr": [0.1, 0.01], "batch": [32, 64]}``: every combination is a trial."""

    model_config = ConfigDict(extra="forbid")

    params: dict[ParamName, Annotated[list[Value], Field(min_length=1, max_length=MAX_VALUES)]] = Field(
        min_length=1, max_length=MAX_PARAMS
    )


class Distribution(BaseModel):
    """Where a random trial draws one parameter from.

    ``uniform``: a float in [low, high]; ``loguniform``: a float whose logarithm is uniform in
    [log low, log high] (0 < low); ``int``: an integer in [low, high], both included;
    ``choice``: one of ``values``, each as likely.
    """

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["uniform", "loguniform", "int", "choice"]
    low: Number | None = None
    high: Number | None = None
    values: Annotated[list[Value], Field(min_length=1, max_length=MAX_VALUES)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.distribution == "choice":
            if self.values is None:
                raise ValueError("values: a choice needs its values")
            if self.low is not None or self.high is not None:
                raise ValueError("low and high are for uniform, loguniform and int, not choice")
            return self
        if self.values is not None:
            raise ValueError(f"values are for choice, not {self.distribution}")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.distribution} needs low and high")
        if self.distribution == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise ValueError("int needs whole numbers for low and high")
        if self.low > self.high or (self.low == self.high and self.distribution != "int"):
            raise ValueError("low must be below high")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs 0 < low")
        return self


class RandomSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[ParamName, Distribution] = Field(min_length=1, max_length=MAX_PARAMS)


def parse_space(strategy: str, params: dict[str, Any]) -> GridSpace | RandomSpace:
    """The sweep's space checked against its strategy (400 naming the field otherwise)."""
    model = GridSpace if strategy == "grid" else RandomSpace
    space = validate(model, {"params": params})
    assert isinstance(space, GridSpace | RandomSpace)
    return space


class SubmitSweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    script_id: int = Field(ge=1, description="An uploaded script's id (`script` in the upload answer).")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Default: `sweep-<id>`; the parent run's name.",
    )
    experiment_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Default: `<username>/<script name>`; created if missing.",
    )
    strategy: Literal["grid", "random"]
    params: dict[str, Any] = Field(
        description='grid: `{"lr": [0.1, 0.01], "batch": [32, 64]}`, every combination a trial. random: '
        '`{"lr": {"distribution": "loguniform", "low": 1e-4, "high": 0.1}, "batch": {"distribution": '
        '"choice", "values": [32, 64]}}`; distributions: uniform, loguniform, int (low and high '
        f"included), choice. At most {MAX_PARAMS} params, {MAX_VALUES} values each.",
    )
    trials: int | None = Field(
        default=None, ge=1, le=MAX_TRIALS, description="random only: how many trials to draw (required)."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="random only: the same seed draws the same trials. Default: one chosen and recorded.",
    )
    metric: str | None = Field(
        default=None, pattern=_METRIC, description="The metric that ranks trials (its latest value)."
    )
    goal: Literal["min", "max"] = Field(default="min", description="Whether lower or higher ranks first.")
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="More command-line arguments, for every trial."
    )
    env: Annotated[dict[str, Annotated[str, Field(max_length=32768)]], AfterValidator(_check_env)] = Field(
        default_factory=dict, max_length=100, description="Extra environment variables for every trial."
    )
    timeout_s: int | None = Field(
        default=None, ge=1, le=30 * 24 * 3600, description="Each trial's time limit."
    )
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs each trial needs, from TRAINFLOW_GPUS.")


SweepStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]


class SweepOut(BaseModel):
    sweep: int = Field(description="The sweep's id.")
    name: str
    status: SweepStatus = Field(
        description="As its parent run: RUNNING while a trial is queued or running, then FINISHED when "
        "every trial succeeded, KILLED when the sweep was cancelled, FAILED otherwise."
    )
    user: str
    script_id: int
    script: str
    experiment_id: str
    run_id: str = Field(
        description="The parent MLflow run; each trial's run names it in `mlflow.parentRunId`."
    )
    strategy: Literal["grid", "random"]
    params: dict[str, Any] = Field(description="The search space, as submitted.")
    trials: int = Field(description="How many trials the sweep has (reruns replace, not add).")
    seed: int | None
    metric: str | None
    goal: Literal["min", "max"]
    counts: dict[str, int] = Field(description="Current trials (superseded ones left out) by status.")
    done: int = Field(description="Current trials that have ended.")
    created_at: datetime
    finished_at: datetime | None


class TrialOut(BaseModel):
    rank: int | None = Field(
        description="1 for the best value of the metric; trials without a value follow, by id; "
        "null for superseded trials."
    )
    value: float | None = Field(description="The metric's latest value; null when none was logged.")
    superseded_by: int | None = Field(description="The job that reran this trial.")
    job: JobOut


class SweepDetail(SweepOut):
    list: Annotated[
        builtins.list[TrialOut], Field(description="Current trials ranked, then superseded ones.")
    ]


class SweepPage(BaseModel):
    total: int
    page: int
    size: int
    list: list[SweepOut]


class SweepListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=1_000_000)
    size: int = Field(default=20, ge=1, le=100)


__all__ = [
    "MAX_TRIALS",
    "Distribution",
    "GridSpace",
    "JobStatusName",
    "RandomSpace",
    "SubmitSweepRequest",
    "SweepDetail",
    "SweepListQuery",
    "SweepOut",
    "SweepPage",
    "TrialOut",
    "parse_space",
]
