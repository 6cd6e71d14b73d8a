"""Shapes of the jobs API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

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
    max_retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Run the script again, into the same MLflow run, after an attempt that ends FAILED "
        "or LOST, up to this many times. Each attempt gets `TRAINFLOW_ATTEMPT` (1, 2 ...) and the same "
        "`TRAINFLOW_CHECKPOINT_DIR` to resume from. CANCELLED and TIMED_OUT are never retried.",
    )


JobStatusName = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"]


class AttemptOut(BaseModel):
    number: int = Field(description="1 for the first run of the script, 2 for the first retry ...")
    status: JobStatusName
    exit_code: int | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


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
    run_name: str | None = Field(default=None, description="The MLflow run's name, as MLflow holds it now.")
    experiment_name: str | None = Field(default=None, description="The name of the run's experiment.")
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="The latest value of each metric asked for with `metrics=` that the run has "
        "logged (null for NaN).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="The user's labels on the job.")
    note: str = Field(default="", description="The user's note on the job.")
    sweep_id: int | None = Field(default=None, description="The parameter sweep this job is a trial of.")
    max_retries: int = Field(description="How many times a FAILED or LOST attempt may be run again.")
    attempt: int = Field(description="The attempt queued, running or last run (1, 2 ...).")
    attempts: list[AttemptOut] = Field(description="Every attempt so far, first to last.")


class JobPage(BaseModel):
    param_keys: list[str] = Field(
        default_factory=list, description="The param keys of the jobs on this page, sorted."
    )
    metric_keys: list[str] = Field(
        default_factory=list,
        description="The metric keys the runs of the jobs on this page have logged, sorted.",
    )
    total: int
    page: int
    size: int
    list: list[JobOut]


# The job list's sort columns, besides ``params.<key>`` and ``metrics.<key>``.
SORT_COLUMNS = (
    "job",
    "status",
    "user",
    "script",
    "run_name",
    "experiment",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
)
SORT_PREFIXES = ("params.", "metrics.")
MAX_METRIC_COLUMNS = 20


def _check_sort(sort: str | None) -> str | None:
    if sort is None or sort in SORT_COLUMNS:
        return sort
    for prefix in SORT_PREFIXES:
        if sort.startswith(prefix) and 0 < len(sort) - len(prefix) <= 250:
            return sort
    raise ValueError(
        f"{sort!r} is not a column to sort by: one of {', '.join(SORT_COLUMNS)}, "
        "params.<key> or metrics.<key>"
    )


def _split_metrics(value: object) -> object:
    """``metrics=a,b`` as ``["a", "b"]``; repeated keys once."""
    if isinstance(value, str):
        return list(dict.fromkeys(key.strip() for key in value.split(",") if key.strip()))
    return value


class JobListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=1_000_000)
    size: int = Field(default=20, ge=1, le=100)
    status: JobStatusName | None = None
    user: str | None = Field(default=None, max_length=64, description="A username (admins see everyone's).")
    q: str | None = Field(
        default=None,
        max_length=200,
        description="Text to find, case-insensitively, in a job's run name, script name, param "
        "keys and values, status, user, tags or note.",
    )
    sort: Annotated[str | None, AfterValidator(_check_sort)] = Field(
        default=None,
        max_length=260,
        description=f"The column to sort by: {', '.join(SORT_COLUMNS)}, `params.<key>` or "
        "`metrics.<key>` (its latest value). Numbers sort as numbers, missing values last in "
        "either order, ties by job id. Default: newest first.",
    )
    order: Literal["asc", "desc"] = Field(default="desc")
    experiment_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,19}$", description="Only this experiment's jobs."
    )
    metrics: Annotated[list[Annotated[str, Field(max_length=250)]], BeforeValidator(_split_metrics)] = Field(
        default_factory=list,
        max_length=MAX_METRIC_COLUMNS,
        description=f"Comma-separated metric keys (at most {MAX_METRIC_COLUMNS}) whose latest "
        "values each job carries.",
    )


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not _NAME.match(key):
            raise ValueError(f"{key!r} is not a valid tag name (letters, digits, _ . -)")
        if len(value) > 250:
            raise ValueError(f"the value of tag {key!r} is longer than 250 characters")
    return tags


class JobPatchRequest(BaseModel):
    """What a user may change of a job at any time: its tags and note (a field left out stays)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tags: Annotated[dict[str, str], Field(max_length=20), AfterValidator(_check_tags)] | None = Field(
        default=None, description="All the job's tags (replacing those it had); at most 20."
    )
    note: str | None = Field(
        default=None, max_length=10_000, description="The job's note (empty removes it)."
    )


class JobDeleteQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delete_run: bool = Field(
        default=False,
        description="Delete the job's MLflow run too (needs the permission MLflow's `runs/delete` needs).",
    )


class LogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(default=0, ge=0, le=2**63 - 1, description="Skip this many lines.")
    limit: int = Field(default=1000, ge=1, le=10_000)
    attempt: int | None = Field(
        default=None, ge=1, le=11, description="Only this attempt's lines; `offset` counts within them."
    )


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
