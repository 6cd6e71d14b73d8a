"""Shapes of the jobs API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from trainflow.runner.sandbox import LOADER_PREFIXES, LOADER_VARIABLES

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,249}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by the server for every job; a user's env may not replace them.
RESERVED_ENV_PREFIXES = ("MLFLOW_", "TRAINFLOW_", "PYTHON")
RESERVED_ENV = {"PATH", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES"}


def _check_params(params: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
    for key, value in params.items():
        if not _NAME.match(key):
            raise ValueError(f"{key!r} is not a valid parameter name (letters, digits, _ . -)")
        if len(str(value)) > 6000:
            raise ValueError(f"the value of {key!r} is longer than 6000 characters")
    return params


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"{name} is set by the server and cannot be overridden")
        if name in LOADER_VARIABLES or name.startswith(LOADER_PREFIXES):
            raise ValueError(f"{name} steers the C library's loader, which a job may not set")
    return env


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    script_id: int = Field(ge=1, description="An uploaded script's id (`script` in the upload answer).")
    experiment_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Default: `<username>/<script name>`; created if missing.",
    )
    run_name: str | None = Field(default=None, min_length=1, max_length=250)
    params: Annotated[dict[str, str | int | float | bool], AfterValidator(_check_params)] = Field(
        default_factory=dict,
        max_length=100,
        description="Logged as MLflow params and passed to the script as `--key value`.",
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="More command-line arguments."
    )
    env: Annotated[dict[str, Annotated[str, Field(max_length=32768)]], AfterValidator(_check_env)] = Field(
        default_factory=dict, max_length=100, description="Extra environment variables for the job."
    )
    timeout_s: int | None = Field(
        default=None, ge=1, le=30 * 24 * 3600, description="Kill the job after this many seconds (TIMED_OUT)."
    )
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs the job needs, from TRAINFLOW_GPUS.")


JobStatusName = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"]


class JobOut(BaseModel):
    job: int = Field(description="The job's id.")
    status: JobStatusName
    reason: str | None
    exit_code: int | None
    queue_position: int | None = Field(description="1 for the next job to start; null unless QUEUED.")
    user: str
    script_id: int
    script: str
    experiment_id: str
    run_id: str
    params: dict[str, str | int | float | bool]
    args: list[str]
    env_names: list[str] = Field(description="The names of the extra environment variables (values hidden).")
    timeout_s: int | None
    gpus: int
    gpu_ids: str | None
    runner: str | None = Field(
        description="Who runs (or ran) the job: `local:<host>:<data dir digest>` for a host's own "
        "supervisors, `ray:<address>` for a Ray cluster; null until it starts."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


class JobPage(BaseModel):
    total: int
    page: int
    size: int
    list: list[JobOut]


class JobListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=1_000_000)
    size: int = Field(default=20, ge=1, le=100)
    status: JobStatusName | None = None
    user: str | None = Field(default=None, max_length=64, description="A username (admins see everyone's).")


class LogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(default=0, ge=0, le=2**63 - 1, description="Skip this many lines.")
    limit: int = Field(default=1000, ge=1, le=10_000)


class LogLine(BaseModel):
    n: int
    ts: float
    stream: Literal["stdout", "stderr"]
    line: str
    partial: bool = False


class LogPage(BaseModel):
    offset: int
    next_offset: int
    lines: list[LogLine]
    is_complete: bool = Field(description="True when the job has ended and no line follows.")


MAX_COMPARED_JOBS = 20
MAX_METRIC_KEYS = 200


def _job_ids(value: str) -> str:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise ValueError("name at least one job id, e.g. 1,2,3")
    if not all(part.isdigit() and len(part) <= 18 and int(part) > 0 for part in parts):
        raise ValueError("job ids are positive whole numbers separated by commas, e.g. 1,2,3")
    if len(set(map(int, parts))) > MAX_COMPARED_JOBS:
        raise ValueError(f"at most {MAX_COMPARED_JOBS} jobs at once")
    return value


def _metric_keys(value: str) -> str:
    parts = [part for part in value.split(",") if part]
    if not parts:
        raise ValueError("name at least one metric key, or leave keys out for all of them")
    if len(set(parts)) > MAX_METRIC_KEYS:
        raise ValueError(f"at most {MAX_METRIC_KEYS} metric keys at once")
    if any(len(part) > 250 for part in parts):
        raise ValueError("a metric key is at most 250 characters")
    return value


class JobMetricsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[str, AfterValidator(_job_ids)] = Field(
        max_length=20 * MAX_COMPARED_JOBS,
        description=f"Job ids separated by commas, at most {MAX_COMPARED_JOBS}.",
    )
    keys: Annotated[str, AfterValidator(_metric_keys)] | None = Field(
        default=None,
        max_length=260 * MAX_METRIC_KEYS,
        description=f"Metric keys separated by commas, at most {MAX_METRIC_KEYS}; default: every metric.",
    )
    points: int = Field(
        default=500, ge=10, le=5000, description="The most steps of each history (evenly sampled)."
    )

    @property
    def job_ids(self) -> list[int]:
        return list(dict.fromkeys(int(part) for part in self.jobs.split(",") if part.strip()))

    @property
    def metric_keys(self) -> list[str] | None:
        if self.keys is None:
            return None
        return list(dict.fromkeys(part for part in self.keys.split(",") if part))


class MetricHistory(BaseModel):
    steps: list[int]
    values: list[float | Literal["NaN", "Infinity", "-Infinity"]] = Field(
        description="NaN and infinities as the strings NaN, Infinity and -Infinity."
    )
    timestamps: list[int] = Field(description="Milliseconds since the epoch, as MLflow stores them.")


class JobMetrics(BaseModel):
    job: int
    run_id: str
    metrics: dict[str, MetricHistory]


class JobMetricsPage(BaseModel):
    jobs: list[JobMetrics] = Field(description="The jobs asked for, in that order, that are yours.")
    missing: list[int] = Field(description="Jobs asked for that do not exist or are not yours.")
