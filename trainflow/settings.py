"""Every ``TRAINFLOW_*`` setting, read once from the environment into a typed object.

Config flows one way: the defaults below, then the environment, then whatever a caller
(a test) passes to :meth:`Settings.replace`. The rest of the code reads the object, never
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainflow.errors import ConfigError


def _setting(env: str, default: Any, help: str) -> Any:  # noqa: A002 - mirrors Datasette's Setting
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    """The server's configuration. ``docs/SETTINGS.md`` lists every field (a test checks)."""

    host: str = _setting("TRAINFLOW_HOST", "127.0.0.1", "Address the server listens on.")
    port: int = _setting("TRAINFLOW_PORT", 5000, "TCP port the server listens on.")
    workers: int = _setting("TRAINFLOW_WORKERS", 1, "Server processes sharing the port (each runs gevent).")
    read_timeout_seconds: float = _setting(
        "TRAINFLOW_READ_TIMEOUT_SECONDS",
        60.0,
        "Longest wait for the next bytes of a request body, and for a request's line and headers "
        "in all. A body that stalls longer is answered 408 and whatever it sent is discarded.",
    )
    idle_timeout_seconds: float = _setting(
        "TRAINFLOW_IDLE_TIMEOUT_SECONDS",
        60.0,
        "How long a kept-alive connection may wait for its next request before the server closes "
        "it. Responses being written (event streams) are never cut by this or the read timeout.",
    )
    write_timeout_seconds: float = _setting(
        "TRAINFLOW_WRITE_TIMEOUT_SECONDS",
        60.0,
        "Longest wait for a client to take the next piece of a response (an event stream's "
        "batch, a file's block). A client that takes nothing for longer is disconnected; a "
        "stream's client resumes with `after`.",
    )
    data_dir: Path = _setting(
        "TRAINFLOW_DATA_DIR",
        Path("data"),
        "Directory for the SQLite database, the signing key, artifacts and uploads.",
    )
    database_url: str = _setting(
        "TRAINFLOW_DATABASE_URL",
        "",
        "SQLAlchemy URL of the database holding MLflow's and trainflow's tables. "
        "Empty: a SQLite file `trainflow.db` in the data directory.",
    )
    database_pool_size: int = _setting(
        "TRAINFLOW_DATABASE_POOL_SIZE",
        10,
        "Connections each server process keeps open to a PostgreSQL (or MySQL) database, for "
        "trainflow and for MLflow's store each; unused with SQLite. PostgreSQL's "
        "max_connections must allow twice (pool size + overflow) per server process.",
    )
    database_max_overflow: int = _setting(
        "TRAINFLOW_DATABASE_MAX_OVERFLOW",
        10,
        "Connections each of those pools may open beyond its size under load (closed when given "
        "back). A request that finds none free within 30 s is answered 503 with Retry-After.",
    )
    secret_key: str = _setting(
        "TRAINFLOW_SECRET_KEY",
        "",
        "Key that signs JWTs. Empty: generated once into `<data dir>/secret_key` (mode 0600).",
    )
    admin_password: str = _setting(
        "TRAINFLOW_ADMIN_PASSWORD",
        "",
        "Password of the `admin` account created on the first start with no users. "
        "Empty: a generated password is printed once.",
    )
    is_registration_open: bool = _setting(
        "TRAINFLOW_REGISTRATION_OPEN",
        True,
        "Whether anyone may register; when false only admins create users.",
    )
    default_permission: str = _setting(
        "TRAINFLOW_DEFAULT_PERMISSION",
        "READ",
        "Permission every signed-in user has on MLflow objects they did not create "
        "(READ, EDIT, MANAGE or NO_PERMISSIONS), as in MLflow's basic-auth app.",
    )
    access_token_minutes: int = _setting(
        "TRAINFLOW_ACCESS_TOKEN_MINUTES", 15, "Lifetime of an access JWT, in minutes."
    )
    refresh_token_days: int = _setting(
        "TRAINFLOW_REFRESH_TOKEN_DAYS", 7, "Lifetime of a refresh JWT, in days."
    )
    auth_cache_seconds: int = _setting(
        "TRAINFLOW_AUTH_CACHE_SECONDS",
        60,
        "How long a verified credential is remembered (0 disables the cache). Any password "
        "change, logout, role change or deletion forgets every entry at once. A password "
        "credential past its time is renewed by a database read while the account's stored "
        "hash is unchanged.",
    )
    auth_cache_size: int = _setting(
        "TRAINFLOW_AUTH_CACHE_SIZE", 10_000, "Most credentials the cache remembers."
    )
    login_attempts: int = _setting(
        "TRAINFLOW_LOGIN_ATTEMPTS",
        5,
        "Failed logins allowed per username and client address within the window.",
    )
    login_window_seconds: int = _setting(
        "TRAINFLOW_LOGIN_WINDOW_SECONDS",
        300,
        "Window of the failed-login limit; the 429's Retry-After says when to retry.",
    )
    login_address_burst: int = _setting(
        "TRAINFLOW_LOGIN_ADDRESS_BURST",
        20,
        "Password checks one client address (an IPv6 /64) may fail in a burst, whatever the "
        "usernames, before it gets 429; a correct password gives its check back, and a username "
        "that signed in from that address before is exempt.",
    )
    login_address_per_minute: int = _setting(
        "TRAINFLOW_LOGIN_ADDRESS_PER_MINUTE",
        10,
        "How many failed password checks per minute a client address earns back after its burst.",
    )
    password_hash_workers: int = _setting(
        "TRAINFLOW_PASSWORD_HASH_WORKERS",
        0,
        "Password hashes computed at once per server process (19 MiB each). "
        "0: the CPUs less one, divided among the server processes, at least 1 and at most 4.",
    )
    password_hash_queue: int = _setting(
        "TRAINFLOW_PASSWORD_HASH_QUEUE",
        32,
        "Logins, registrations and password changes that may wait for a hashing worker; "
        "beyond that they get 429 with Retry-After at once.",
    )
    trusted_proxies: str = _setting(
        "TRAINFLOW_TRUSTED_PROXIES",
        "",
        "Reverse proxies in front of the server, comma-separated addresses or networks "
        "(`127.0.0.1,10.0.0.0/8`). Only for requests from these is `X-Forwarded-For` read, from "
        "the right, skipping trusted hops, to find the client address the login limits count. "
        "Empty: the header is ignored.",
    )
    max_upload_mb: int = _setting(
        "TRAINFLOW_MAX_UPLOAD_MB", 100, "Largest script or project archive accepted, in MB (413 above)."
    )
    max_unpacked_mb: int = _setting(
        "TRAINFLOW_MAX_UNPACKED_MB",
        1000,
        "Largest total size a project archive may unpack to, in MB (guards against zip bombs).",
    )
    uploads_per_user: int = _setting(
        "TRAINFLOW_UPLOADS_PER_USER",
        3,
        "Uploads one user may send at once per server process; one more is answered 429 with "
        "Retry-After before any of its body is read.",
    )
    max_concurrent_jobs: int = _setting(
        "TRAINFLOW_MAX_CONCURRENT_JOBS", 2, "Jobs running at once; the rest wait QUEUED, first in first out."
    )
    max_jobs_per_user: int = _setting(
        "TRAINFLOW_MAX_JOBS_PER_USER",
        0,
        "Jobs one user may run at once (0: no limit); their others wait while other users' jobs start.",
    )
    gpus: str = _setting(
        "TRAINFLOW_GPUS",
        "",
        "GPU ids jobs may use, e.g. `0,1`; a job asking for N gets N free ones in CUDA_VISIBLE_DEVICES.",
    )
    job_grace_seconds: int = _setting(
        "TRAINFLOW_JOB_GRACE_SECONDS", 10, "Seconds between SIGTERM and SIGKILL when a job is cancelled."
    )
    job_memory_mb: int = _setting(
        "TRAINFLOW_JOB_MEMORY_MB",
        4096,
        "Memory one job may use, in MB (all its processes together where a cgroup can be made; "
        "per process otherwise). Past it the job ends FAILED: `memory limit of 4096 MB exceeded`. "
        "0: no limit.",
    )
    job_max_processes: int = _setting(
        "TRAINFLOW_JOB_MAX_PROCESSES",
        512,
        "Processes and threads one job may run at once (a fork bomb ends the job, not the machine). "
        "0: no limit.",
    )
    job_open_files: int = _setting(
        "TRAINFLOW_JOB_OPEN_FILES", 4096, "Files each of a job's processes may hold open. 0: no limit."
    )
    job_disk_mb: int = _setting(
        "TRAINFLOW_JOB_DISK_MB",
        10240,
        "Disk a job may fill in its folder (its copy of the script, outputs, temporary files and "
        "home), in MB, measured every couple of seconds. 0: no limit.",
    )
    job_max_seconds: int = _setting(
        "TRAINFLOW_JOB_MAX_SECONDS",
        0,
        "Longest a job may run, in seconds: the timeout of a job that sets none, and the most one "
        "may set. 0: no maximum.",
    )
    job_cgroup: str = _setting(
        "TRAINFLOW_JOB_CGROUP",
        "",
        "A cgroup v2 folder delegated to the server's user (systemd `Delegate=yes`) in which each "
        "job gets a cgroup of its own for its memory and process limits. Empty: the parent of the "
        "server's own cgroup when it is writable, else the cgroup v1 memory and pids hierarchies "
        "(as root), else rlimits and the supervisor's own counting. `off`: never a cgroup.",
    )
    user_uploads_mb: int = _setting(
        "TRAINFLOW_USER_UPLOADS_MB",
        1000,
        "Disk one user's stored scripts may take, in MB, counting each upload and what it unpacks "
        "to; an upload past it gets 413. 0: no quota.",
    )
    min_free_mb: int = _setting(
        "TRAINFLOW_MIN_FREE_MB",
        100,
        "Free space, in MB, the disk holding the data directory keeps for what is already running: "
        "below it, new uploads and job submissions get 507 `insufficient_storage` before anything is "
        "written, and queued jobs wait to start (running jobs, their logs and metrics go on until the "
        "disk is full). 0: no watermark (queued jobs still wait while under 2 MB are free).",
    )
    job_disk_full_seconds: int = _setting(
        "TRAINFLOW_JOB_DISK_FULL_SECONDS",
        120,
        "How long a running job waits for room when the disk holding the data directory is full: its "
        "supervisor holds the job's output in memory meanwhile (8 MB at most, then the job waits on "
        "its prints). Past it the job ends FAILED: `The disk holding the data directory is full`.",
    )
    system_metrics_seconds: float = _setting(
        "TRAINFLOW_SYSTEM_METRICS_SECONDS",
        5.0,
        "How often each job's supervisor samples the job's own CPU (100 % = one core, summed over "
        "its processes), memory (their resident memory) and, through NVML, its GPUs' utilisation "
        "and memory: shown live in the job page's System panel and logged to the job's MLflow run "
        "under MLflow's `system/` keys. 0: off.",
    )
    nvml_library: str = _setting(
        "TRAINFLOW_NVML_LIBRARY",
        "libnvidia-ml.so.1",
        "The NVML library supervisors read a job's GPU figures from (the NVIDIA driver's, found by "
        "the system's loader). Where it cannot be loaded, jobs report no GPU figures. Empty: none.",
    )
    sweep_seconds: int = _setting(
        "TRAINFLOW_SWEEP_SECONDS",
        600,
        "How often the server that runs jobs removes debris a crash left in the data directory "
        "(partial uploads, script and job folders without a database row). 0: only at start-up.",
    )
    debris_grace_seconds: int = _setting(
        "TRAINFLOW_DEBRIS_GRACE_SECONDS",
        3600,
        "How long a partial upload, or a script or job folder without a database row, must have gone "
        "unwritten before the periodic sweep removes it (longer than any upload may stall). At "
        "start-up the server that runs jobs removes them whatever their age.",
    )
    user_jobs_mb: int = _setting(
        "TRAINFLOW_USER_JOBS_MB",
        20480,
        "Disk one user's job folders may take, in MB (each job's copy of its script, its outputs "
        "and logs, until the job is deleted); a submission past it gets 409. 0: no quota.",
    )
    pip_index_url: str = _setting(
        "TRAINFLOW_PIP_INDEX_URL",
        "",
        "Package index pip installs a job's requirements.txt from. When this and the next two are "
        "empty, the server's own pip configuration says where packages come from (its `PIP_*` "
        "variables and pip.conf files: index, extra indexes, wheel folders, trusted hosts, "
        "certificate, constraints), read once at start. Jobs cannot choose another: a job's `env` "
        "never reaches pip, which runs `--isolated`.",
    )
    pip_extra_index_url: str = _setting(
        "TRAINFLOW_PIP_EXTRA_INDEX_URL", "", "Further package indexes for pip, separated by spaces."
    )
    pip_trusted_host: str = _setting(
        "TRAINFLOW_PIP_TRUSTED_HOST",
        "",
        "Hosts pip may reach without valid HTTPS, separated by spaces (for a private index).",
    )
    job_sandbox: str = _setting(
        "TRAINFLOW_JOB_SANDBOX",
        "auto",
        "How jobs are isolated (docs/SECURITY.md). `auto`: in a sandbox (bubblewrap, Landlock) when "
        "one can be built, else jobs run only for admins (others get 403 on submit). `required`: the "
        "server refuses to start without a sandbox. `off`: no sandbox, jobs run as the server's "
        "user for everyone (a warning at start-up).",
    )
    job_uid: int = _setting(
        "TRAINFLOW_JOB_UID",
        65534,
        "User id sandboxed jobs and their venv builds run as when the server runs as root (never 0). "
        "A server that is not root runs them under its own id in a user namespace.",
    )
    job_gid: int = _setting(
        "TRAINFLOW_JOB_GID", 65534, "Group id of sandboxed jobs when the server runs as root (never 0)."
    )
    job_read_paths: str = _setting(
        "TRAINFLOW_JOB_READ_PATHS",
        "",
        "Further paths sandboxed jobs may read (datasets, a CUDA toolkit), separated by `:`. None may "
        "contain the data directory.",
    )
    job_network: str = _setting(
        "TRAINFLOW_JOB_NETWORK",
        "server",
        "TCP a sandboxed job may use. `server`: connect to the server's port only (any address), "
        "never listen, so services trusting loopback (PostgreSQL, Redis) stay out of reach. `open`: "
        "any port, listening included (multi-process training with torch.distributed or NCCL), "
        "only where no local service trusts loopback.",
    )
    bwrap: str = _setting(
        "TRAINFLOW_BWRAP",
        "bwrap",
        "The bubblewrap program that builds job sandboxes (`make install` puts it there).",
    )
    run_jobs: bool = _setting(
        "TRAINFLOW_RUN_JOBS",
        True,
        "Whether this server runs the job scheduler. Set false on extra servers that share the data "
        "directory and database with the one that runs jobs (they still serve and stream them).",
    )
    executor: str = _setting(
        "TRAINFLOW_EXECUTOR",
        "local",
        "Where jobs run. `local`: a supervised process per job on this host. `ray`: a Ray job per "
        "job on the Ray cluster at `TRAINFLOW_RAY_ADDRESS`, through Ray's Job Submission API (the "
        "cluster's nodes need Python with MLflow; jobs there run without trainflow's sandbox).",
    )
    ray_address: str = _setting(
        "TRAINFLOW_RAY_ADDRESS",
        "",
        "The Ray cluster's job-submission address (its dashboard's HTTP address, "
        "`http://ray-head:8265`), with `TRAINFLOW_EXECUTOR=ray`. Its nodes must reach "
        "`TRAINFLOW_PUBLIC_URL`.",
    )
    ray_ticket_seconds: int = _setting(
        "TRAINFLOW_RAY_TICKET_SECONDS",
        600,
        "How long a Ray job's single-use ticket (which its entrypoint exchanges for its tokens) stays "
        "good: longer than a job may wait on the cluster for resources and its requirements.txt. A "
        "job that starts later fails with a message saying so.",
    )
    shared: bool = _setting(
        "TRAINFLOW_SHARED",
        False,
        "This host is one of several that serve one deployment behind one address. The server then "
        "refuses to start without PostgreSQL (`TRAINFLOW_DATABASE_URL`), Redis (`TRAINFLOW_REDIS_URL`), "
        "one signing key for every host (`TRAINFLOW_SECRET_KEY`), an artifact store every host "
        "reaches (`TRAINFLOW_ARTIFACTS_URI`) and the URL jobs reach the servers at "
        "(`TRAINFLOW_PUBLIC_URL`).",
    )
    artifacts_uri: str = _setting(
        "TRAINFLOW_ARTIFACTS_URI",
        "",
        "Where runs' artifacts are stored, behind the server's artifact proxy (clients never need "
        "to reach it): a folder, or any of MLflow's artifact stores (`s3://bucket/prefix`, ...). "
        "Empty: `<data dir>/artifacts`.",
    )
    public_url: str = _setting(
        "TRAINFLOW_PUBLIC_URL",
        "",
        "The URL jobs reach the server at, for their MLflow calls (`http://trainflow.internal:5000`). "
        "Empty: this host's own address and port.",
    )
    host_dead_seconds: float = _setting(
        "TRAINFLOW_HOST_DEAD_SECONDS",
        30.0,
        "How long a host that runs jobs may be silent (no heartbeat in the database; each records "
        "one every few seconds) before another host decides for its RUNNING jobs: LOST, never run "
        "again. PostgreSQL only (several hosts).",
    )
    redis_url: str = _setting(
        "TRAINFLOW_REDIS_URL",
        "",
        "Redis for the event bus (`redis://[:password@]host:6379/0`, or `rediss://`), so that server "
        "processes on several hosts see each other's jobs live. Empty: a local bus between the "
        "processes of this machine, nothing to install.",
    )
    redis_channel: str = _setting(
        "TRAINFLOW_REDIS_CHANNEL",
        "",
        "Pub/sub channel of the Redis bus. Empty: `trainflow:` and a digest of the database URL, so "
        "deployments sharing one Redis stay apart.",
    )
    stream_heartbeat_seconds: float = _setting(
        "TRAINFLOW_STREAM_HEARTBEAT_SECONDS",
        15.0,
        "Seconds of silence after which an event stream sends a heartbeat line (keeps proxies from "
        "closing it). While all-jobs streams are open, also how often a server process looks in the "
        "database for a status change whose bus notice it missed.",
    )
    stream_buffer_kb: int = _setting(
        "TRAINFLOW_STREAM_BUFFER_KB",
        1024,
        "Recent events each server process keeps in memory per followed job. A follower that falls "
        "further behind gets a `resync` event and resumes from the log with `after`.",
    )
    cors_origins: str = _setting(
        "TRAINFLOW_CORS_ORIGINS",
        "",
        "Comma-separated origins (`https://app.example.com`) whose pages may call the API with "
        "credentials (CORS). Empty: none; requests that change something from any other origin, "
        "localhost included, are refused.",
    )
    log_level: str = _setting("TRAINFLOW_LOG_LEVEL", "INFO", "Level of the server's log.")

    def __post_init__(self) -> None:
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                env = next(f.metadata["env"] for f in dataclasses.fields(self) if f.name == name)
                raise ConfigError(f"{env} must be between {low} and {high}, not {value}.")
        if self.public_url and not _is_http_url(self.public_url):
            raise ConfigError(
                f"TRAINFLOW_PUBLIC_URL must be an http:// or https:// URL, not {self.public_url!r}."
            )
        if self.executor not in {"local", "ray"}:
            raise ConfigError(f"TRAINFLOW_EXECUTOR must be local or ray, not {self.executor!r}.")
        if self.executor == "ray" and not _is_http_url(self.ray_address):
            raise ConfigError(
                "TRAINFLOW_EXECUTOR=ray needs TRAINFLOW_RAY_ADDRESS, the Ray cluster's job-submission "
                f"address (http://ray-head:8265), not {self.ray_address!r}."
            )
        if self.shared:
            self._check_shared()

    def _check_shared(self) -> None:
        """Shared mode starts complete or not at all: every missing piece is named at once."""
        missing = []
        if not self.resolved_database_url.startswith("postgresql"):
            missing.append("TRAINFLOW_DATABASE_URL naming a PostgreSQL database (SQLite lives on one host)")
        if not self.redis_url:
            missing.append("TRAINFLOW_REDIS_URL (the event bus between hosts)")
        if not self.secret_key:
            missing.append("TRAINFLOW_SECRET_KEY (one signing key for every host)")
        if not self.artifacts_uri:
            missing.append("TRAINFLOW_ARTIFACTS_URI (an artifact store every host reaches)")
        if not self.public_url:
            missing.append("TRAINFLOW_PUBLIC_URL (where jobs reach the servers)")
        if missing:
            raise ConfigError("TRAINFLOW_SHARED=true needs " + "; ".join(missing) + ".")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``environ`` (default ``os.environ``), falling back to defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], raw, type(f.default))
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{self.resolved_data_dir / 'trainflow.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.resolved_data_dir / "jobs"

    @property
    def gpu_ids(self) -> list[str]:
        return [gpu.strip() for gpu in self.gpus.split(",") if gpu.strip()]

    @property
    def local_url(self) -> str:
        """How a job on this machine reaches the server."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def bus_channel(self) -> str:
        if self.redis_channel:
            return self.redis_channel
        import hashlib

        return "trainflow:" + hashlib.sha256(self.resolved_database_url.encode()).hexdigest()[:12]

    @property
    def uploads_dir(self) -> Path:
        return self.resolved_data_dir / "uploads"

    @property
    def artifacts_dir(self) -> Path:
        return self.resolved_data_dir / "artifacts"

    @property
    def artifacts_destination(self) -> str:
        """Where the artifact proxy stores artifacts: the configured store, or the data directory."""
        return self.artifacts_uri or str(self.artifacts_dir)

    @property
    def jobs_tracking_url(self) -> str:
        """The server's URL as jobs use it."""
        return self.public_url.rstrip("/") or self.local_url

    def __repr__(self) -> str:
        # Never print secrets, e.g. when a settings object lands in a log or a traceback.
        shown = {
            f.name: (
                "***"
                if f.name in {"secret_key", "admin_password", "redis_url"} and getattr(self, f.name)
                else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }
        return f"Settings({shown})"


def _is_http_url(text: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


# Bounds of the numeric settings: a value outside is a start-up error naming the variable.
_RANGES = [
    ("host_dead_seconds", 1, 24 * 3600),
    ("port", 1, 65535),
    ("workers", 1, 64),
    ("database_pool_size", 1, 1000),
    ("database_max_overflow", 0, 1000),
    ("access_token_minutes", 1, 24 * 60),
    ("refresh_token_days", 1, 365),
    ("auth_cache_seconds", 0, 3600),
    ("auth_cache_size", 1, 10_000_000),
    ("login_attempts", 1, 1000),
    ("login_window_seconds", 1, 86_400),
    ("login_address_burst", 1, 1_000_000),
    ("login_address_per_minute", 1, 1_000_000),
    ("password_hash_workers", 0, 256),
    ("password_hash_queue", 0, 100_000),
    ("max_upload_mb", 1, 1_000_000),
    ("max_unpacked_mb", 1, 10_000_000),
    ("uploads_per_user", 1, 10_000),
    ("read_timeout_seconds", 0.1, 86_400),
    ("idle_timeout_seconds", 0.1, 86_400),
    ("write_timeout_seconds", 0.1, 86_400),
    ("max_concurrent_jobs", 1, 10_000),
    ("max_jobs_per_user", 0, 10_000),
    ("job_grace_seconds", 0, 3600),
    ("job_memory_mb", 0, 1 << 30),
    ("job_max_processes", 0, 1 << 22),
    ("job_open_files", 0, 1 << 24),
    ("job_disk_mb", 0, 1 << 40),
    ("job_max_seconds", 0, 100 * 365 * 86_400),
    ("user_uploads_mb", 0, 1 << 40),
    ("user_jobs_mb", 0, 1 << 40),
    ("min_free_mb", 0, 1 << 30),
    ("job_disk_full_seconds", 1, 86_400),
    ("system_metrics_seconds", 0, 3600),
    ("sweep_seconds", 0, 86_400),
    ("debris_grace_seconds", 0, 30 * 86_400),
    ("job_uid", 1, 4_294_967_294),
    ("job_gid", 1, 4_294_967_294),
    ("stream_heartbeat_seconds", 0.05, 3600),
    ("stream_buffer_kb", 64, 1024 * 1024),
    ("ray_ticket_seconds", 10, 7 * 86_400),
]


def normalize_database_url(url: str) -> str:
    """Give a bare ``postgresql://`` (or ``postgres://``) URL the psycopg2 driver we ship.

    SQLAlchemy 2.1 would otherwise pick psycopg 3, which trainflow does not install.
    """
    scheme, separator, rest = url.partition("://")
    if separator and scheme in {"postgres", "postgresql"}:
        return f"postgresql+psycopg2://{rest}"
    return url


def _parse(env: str, raw: str, kind: type) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{env} must be true or false, not {raw!r}.")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{env} must be a whole number, not {raw!r}.") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{env} must be a number, not {raw!r}.") from None
    if kind is Path or issubclass(kind, Path):
        return Path(raw)
    return raw


def documented_settings() -> list[tuple[str, Any, str]]:
    """(env name, default, help) of every setting, for the docs and the CLI."""
    return [(f.metadata["env"], f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)]


def settings_markdown() -> str:
    """docs/SETTINGS.md, generated: `python -m trainflow.settings > docs/SETTINGS.md`."""
    lines = [
        "# Settings",
        "",
        "trainflow reads these environment variables once, at start-up. Every one is optional; the "
        "defaults run a one-machine server with nothing to install.",
        "",
        "| Variable | Default | What it does |",
        "| --- | --- | --- |",
    ]
    for env, default, help_text in documented_settings():
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        lines.append(f"| `{env}` | {shown} | {help_text} |")
    lines += [
        "",
        "MLflow's own server variables also apply where trainflow does not set them, for example",
        "`MLFLOW_SERVER_ALLOWED_HOSTS` (the Host headers accepted; by default localhost and private",
        "addresses, as with `mlflow server`). `MLFLOW_SERVER_CORS_ALLOWED_ORIGINS` does not: trainflow",
        "replaces MLflow's cross-origin rules with `TRAINFLOW_CORS_ORIGINS`.",
        "",
        "The command line (`trainflow login`, `submit`, ...) reads `TRAINFLOW_URL` for `--server`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown(), end="")
