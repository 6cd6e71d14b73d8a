"""A job's sandbox: bubblewrap builds its namespaces, the launcher inside locks itself down.

Standard library only: the supervisor imports it. The web process describes what one job may
touch as a *policy* (a JSON object stored in the job's spec.json); :func:`command` turns it into
the bubblewrap command line that runs the job:

- **namespaces** (bubblewrap): a new mount namespace whose root is an empty tmpfs holding only
  the system's programs and libraries (``/usr`` and its links), a few files of ``/etc``, the
  Python installation and the server's packages, all read-only, plus the paths the policy
  names; a new ``/proc`` in a new PID namespace (the job sees and signals only its own
  processes), a minimal ``/dev``, private ``/tmp`` and ``/dev/shm``, and new IPC, UTS and
  cgroup namespaces. The network namespace is the host's: the job reaches the server on
  loopback (Landlock then limits which TCP ports).
- **identity**: when the server runs as root, bubblewrap (which needs no user namespace then)
  keeps only CAP_SETUID, CAP_SETGID and CAP_SETPCAP; the launcher empties the bounding set and
  switches to the policy's unprivileged uid and gid, which drops those too. Otherwise
  bubblewrap creates a user namespace and drops every capability; the job keeps the server's
  uid outside it.
- **a seccomp filter** (:mod:`trainflow.runner.seccomp`, loaded by bubblewrap): no new user
  namespace, kernel keyring, bpf, userfaultfd, perf events or mounting.
- **the launcher** (:mod:`trainflow.runner.launcher`): ``PR_SET_NO_NEW_PRIVS``, Landlock rules
  for the same paths (defence in depth, should a mount leak), TCP connect to the listed ports
  only, no signals or abstract unix sockets outside the sandbox; then it execs the job.

A policy (every path absolute):

``bwrap``        the bubblewrap executable
``identity``     ``{"uid", "gid"}`` to run as (the server is root), or null
``read``         paths bound read-only at the same place (a venv, datasets)
``write``        paths bound read-write at the same place (the job's folders)
``binds``        ``[source, destination, "ro" | "rw"]``: a path shown somewhere else
``devices``      device files to show (GPUs)
``tcp``          the TCP ports the job may connect to; null leaves TCP alone
``hidden``       paths no bound path may contain (the data directory): checked, never bound
``require_landlock``  refuse to run where the kernel has no Landlock

The job is started with SIGTERM ignored (:func:`ignore_sigterm` in ``preexec_fn``): bubblewrap
would die of it and take the job down at once, so only the job's own processes (which the
launcher gives the default disposition back) receive the supervisor's SIGTERM, and can end
cleanly. Bubblewrap exits with the job's exit code, or 128 + the signal that killed it
(:func:`exit_status` turns that back into a signal).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trainflow.runner import launcher, seccomp

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "launcher.py")
# The launcher runs as an imported module, so that Python reads its compiled form instead of
# compiling it on every start (milliseconds that count); -I leaves this folder off sys.path.
BOOTSTRAP = f"import sys; sys.path.insert(0, {HERE!r}); import launcher; sys.exit(launcher.main(sys.argv))"
LAUNCHER_MODULES = ("launcher", "landlock", "limits")
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the trainflow package
# The sandbox's own private folders (tmpfs), not temporary files of this process.
TMP, SHM = "/tmp", "/dev/shm"  # noqa: S108
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only what programs need from /etc: never all of it (a uid-0 process could read /etc/shadow).
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs",  # not ssl/private
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "services",
    "protocols",
    "mime.types",
    "alternatives",
    "os-release",
    "lsb-release",
    "debian_version",
    "redhat-release",
    "system-release",
    "fonts",
)
REPORT_TIMEOUT_S = 30.0
# What steers the C library's loader before a program runs: glibc ignores these in a setuid
# program, but bubblewrap (where the server is root) is an ordinary program with root's
# privileges until the sandbox exists, so it never gets them.
LOADER_PREFIXES = ("LD_", "DYLD_")
LOADER_VARIABLES = frozenset(
    "GCONV_PATH GETCONF_DIR GLIBC_TUNABLES HOSTALIASES LOCALDOMAIN LOCPATH MALLOC_TRACE NIS_PATH "
    "NLSPATH RESOLV_HOST_CONF RES_OPTIONS TZDIR".split()
)


class SandboxError(Exception):
    """A sandbox cannot be built as asked; the message says why."""


def runtime_paths() -> list[str]:
    """What every job reads: this Python installation, its packages and trainflow itself.

    The trainflow package folder is bound, never its parent: in development the data
    directory sits beside it.
    """
    paths = {sys.base_prefix, sys.prefix, PACKAGE}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[name])
    real = {os.path.realpath(path) for path in paths} | paths
    return _outermost(path for path in real if os.path.exists(path))


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths, without those inside another one of them."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}):
        if not any(_is_within(path, parent) for parent in kept):
            kept.append(path)
    return kept


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_hidden(bound: Iterable[str], hidden: Iterable[str]) -> None:
    """Refuse a policy that would show a hidden path (the data directory) through a bind."""
    hidden_real = [os.path.realpath(path) for path in hidden]
    for path in bound:
        real = os.path.realpath(path)
        for secret in hidden_real:
            if _is_within(secret, real):
                raise SandboxError(
                    f"{path} contains the data directory {secret}, so a job would see it; "
                    "move the data directory (TRAINFLOW_DATA_DIR) out of it."
                )


def check_own_folder(path: str) -> None:
    """A folder a job could have written must be a real folder here, not a link elsewhere."""
    if os.path.realpath(path) != os.path.normpath(path) or not os.path.isdir(path):
        raise SandboxError(f"{path} is not a folder (or is reached through a link); it is not bound.")


def command(
    argv: Sequence[str],
    policy: dict[str, Any],
    cwd: str,
    report_fd: int | None = None,
    limits: dict[str, Any] | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The command line that runs ``argv`` in ``cwd`` inside the policy's sandbox.

    ``report_fd``: an inherited descriptor the launcher writes what it applied to (one line,
    :func:`read_report`). ``limits``: the launcher's ``"limits"`` document (rlimits), applied
    before the rest. ``seccomp_fd``: an inherited descriptor holding the seccomp filter
    (:mod:`trainflow.runner.seccomp`). :func:`spawn` does all this.
    """
    read = [*runtime_paths(), *policy.get("read", [])]
    write = list(policy.get("write", []))
    binds = [tuple(b) for b in policy.get("binds", [])]
    check_hidden([*read, *write, *(source for source, _, _ in binds)], policy.get("hidden", []))
    for path in write:
        check_own_folder(path)
    args = [
        policy.get("bwrap") or "bwrap",
        "--die-with-parent",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "trainflow-job",
    ]
    if policy.get("identity"):
        args += ["--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    landlock_read = ["/etc", "/proc", "/sys"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            landlock_read.append(path)
    args += ["--dir", "/etc"]  # 0755: bubblewrap would make it 0700, out of the job's reach
    for name in ETC_FILES:
        if "/" in name and os.path.exists(f"/etc/{name}"):
            args += ["--dir", f"/etc/{os.path.dirname(name)}"]
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", TMP, "--perms", "1777", "--tmpfs", SHM]
    for device in policy.get("devices", []):
        args += ["--dev-bind-try", device, device]
    mounts = [(path, path, "ro") for path in read] + [(path, path, "rw") for path in write] + binds
    args += _parents([destination for _, destination, _ in mounts])
    # Outer folders first, so that a bind inside another one lands on top of it.
    for source, destination, mode in sorted(mounts, key=lambda m: m[1].count("/")):
        args += ["--ro-bind" if mode == "ro" else "--bind", source, destination]
    landlock_read += [destination for _, destination, mode in mounts if mode == "ro"]
    landlock_write = ["/dev"] + [destination for _, destination, mode in mounts if mode == "rw"]
    # Folders above a mount point under /tmp (a data directory there) must stay unwritable: the
    # job then writes only its own folders, TMPDIR among them, and not the rest of /tmp.
    if not any(_is_within(destination, TMP) for _, destination, _ in mounts):
        landlock_write.append(TMP)
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--chdir", cwd, "--"]
    config = {
        "sandbox": {
            "identity": policy.get("identity"),
            "read": landlock_read,
            "write": landlock_write,
            "tcp": policy.get("tcp"),
            "require_landlock": bool(policy.get("require_landlock")),
            "report_fd": report_fd,
        }
    }
    if limits:
        config["limits"] = limits
    return [*args, *launcher_command(), launcher.encode(config), *argv]


def launcher_command() -> list[str]:
    """How to start the launcher: this Python, isolated and without site packages."""
    return [sys.executable, "-I", "-S", "-c", BOOTSTRAP]


def compile_launcher() -> None:
    """Write the compiled form of the launcher's modules, which a sandbox cannot write itself.

    Best effort: a package installed read-only (by pip, as root) has them already.
    """
    import py_compile

    for name in LAUNCHER_MODULES:
        path = os.path.join(HERE, f"{name}.py")
        if os.path.exists(path):
            with contextlib.suppress(OSError, py_compile.PyCompileError):
                py_compile.compile(path, doraise=True)


def _parents(destinations: Iterable[str]) -> list[str]:
    """``--dir`` for every folder above a mount point (bubblewrap would make them 0700)."""
    parents: set[str] = set()
    for destination in destinations:
        parent = os.path.dirname(destination)
        while parent not in ("/", "") and parent not in parents:
            parents.add(parent)
            parent = os.path.dirname(parent)
    args: list[str] = []
    for parent in sorted(parents, key=lambda p: p.count("/")):
        # Not the sandbox's own folders, nor /lib and the like (links to /usr/lib, already made);
        # a link elsewhere on the host is a plain folder in the sandbox.
        if parent in (TMP, "/dev", "/proc", "/sys", "/etc") or any(
            _is_within(parent, d) for d in SYSTEM_DIRS
        ):
            continue
        args += ["--dir", parent]
    return args


def spawn(
    argv: Sequence[str],
    policy: dict[str, Any],
    cwd: str,
    *,
    limits: dict[str, Any] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    **popen: Any,
) -> tuple[subprocess.Popen[bytes], dict[str, Any] | None]:
    """Start ``argv`` in the policy's sandbox, in a session of its own; wait for the launcher.

    Returns the process and what the sandbox applied, or None if it did not come up (the
    process then exits 126, having said why on its stderr). ``preexec_fn`` runs in the first
    process, unsandboxed (a cgroup to join); ``popen``: the rest of ``subprocess.Popen``'s
    arguments (``env``, ``stdout``, ...).
    """
    if popen.get("env") is not None:
        popen["env"] = without_loader_variables(popen["env"])
    read_end, write_end = os.pipe()
    filter_fd = seccomp.filter_fd()
    inherited: tuple[int, ...] = (write_end,) if filter_fd is None else (write_end, filter_fd)

    def before_exec() -> None:
        ignore_sigterm()
        if preexec_fn is not None:
            preexec_fn()

    try:
        process = subprocess.Popen(
            command(argv, policy, cwd, report_fd=write_end, limits=limits, seccomp_fd=filter_fd),
            start_new_session=True,
            pass_fds=inherited,
            preexec_fn=before_exec,  # the supervisor that calls this starts no threads
            **popen,
        )
        for fd in inherited:
            os.close(fd)
        inherited = ()
        applied = read_report(read_end)
    finally:
        os.close(read_end)
        for fd in inherited:
            os.close(fd)
    return process, applied


def without_loader_variables(env: dict[str, str]) -> dict[str, str]:
    """``env`` less what would steer the loader of bubblewrap itself (see LOADER_VARIABLES)."""
    return {k: v for k, v in env.items() if k not in LOADER_VARIABLES and not k.startswith(LOADER_PREFIXES)}


def ignore_sigterm() -> None:
    """``preexec_fn`` of the sandbox's first process (see the module's docstring)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_status(code: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a job from bubblewrap's exit code, or from Popen's (negative)."""
    if code < 0:
        return None, -code
    if 128 < code <= 128 + 64:
        return None, code - 128
    return code, None


def read_report(fd: int, timeout_s: float = REPORT_TIMEOUT_S) -> dict[str, Any] | None:
    """The launcher's one-line report of what it applied; None if it failed before writing it."""
    import selectors

    data = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            data += chunk
    try:
        report = launcher.decode(data.split(b"\n", 1)[0])
    except (ValueError, EOFError, TypeError):
        return None
    return report if isinstance(report, dict) else None


def bwrap_version(bwrap: str) -> str | None:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip().removeprefix("bubblewrap ").strip() or None if out.returncode == 0 else None


def probe(policy: dict[str, Any]) -> dict[str, Any]:
    """Build a sandbox once with the policy and report what is in force, or why not.

    Returns ``{"is_available", "bwrap", "identity", "landlock", "start_ms", "reason"}``.
    """
    bwrap = policy.get("bwrap") or "bwrap"
    version = bwrap_version(bwrap)
    result: dict[str, Any] = {"is_available": False, "bwrap": version, "landlock": None, "reason": None}
    if os.uname().sysname != "Linux":
        result["reason"] = f"jobs are sandboxed only on Linux, not {os.uname().sysname}"
        return result
    if version is None:
        result["reason"] = f"bubblewrap ({bwrap}) is not installed; see docs/SECURITY.md"
        return result
    compile_launcher()
    try:
        started = time.monotonic()
        process, report = spawn(
            [], policy, "/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        elapsed = time.monotonic() - started
        out, err = process.communicate(timeout=30)
    except (OSError, SandboxError, subprocess.TimeoutExpired) as e:
        result["reason"] = f"bubblewrap could not start: {e}"
        return result
    if process.returncode != 0 or report is None:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        result["reason"] = "bubblewrap could not build a sandbox: " + (
            detail[-1] if detail else f"exit code {process.returncode}"
        )
        return result
    landlock = report.get("landlock") or {}
    result.update(
        is_available=True,
        is_user_namespace=not policy.get("identity"),
        identity={"uid": report.get("uid"), "gid": report.get("gid")},
        landlock=landlock,
        seccomp=bool(report.get("seccomp")),
        start_ms=round(elapsed * 1000, 1),
    )
    return result


def describe(result: dict[str, Any]) -> str:
    """One line saying what a probe found."""
    if not result.get("is_available"):
        return f"no job sandbox: {result.get('reason')}"
    landlock = result.get("landlock") or {}
    abi = landlock.get("abi") or 0
    identity = result.get("identity") or {}
    parts = [f"bubblewrap {result.get('bwrap')}"]
    parts.append(f"Landlock ABI {abi}" if abi else f"no Landlock ({landlock.get('error', 'not supported')})")
    if abi and landlock.get("tcp") is None:
        parts.append("no TCP rules (Landlock ABI < 4)")
    if abi and not landlock.get("scoped"):
        parts.append("no signal scoping (Landlock ABI < 6)")
    parts.append("a seccomp filter" if result.get("seccomp") else "no seccomp filter")
    if result.get("is_user_namespace"):
        parts.append(f"jobs run as the server's uid {identity.get('uid')} in a user namespace")
    else:
        parts.append(f"jobs run as uid {identity.get('uid')} gid {identity.get('gid')}")
    return "jobs are sandboxed: " + ", ".join(parts) + f" ({result.get('start_ms')} ms to start one)"


def chown_tree(paths: Iterable[str], uid: int, gid: int) -> None:
    """Give folders (and all they hold) to the job's uid; links are changed, never followed."""
    for top in paths:
        os.lchown(top, uid, gid)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)


def publish(source: str, destination: str, uid: int | None = None, gid: int | None = None) -> bool:
    """Move a folder a sandboxed step built (a venv) into place, unless one is there already.

    Only a real folder moves (a link the step left there would point a later bind elsewhere).
    It becomes the server's (``uid``/``gid``, when the step ran as another uid) and read-only
    below its top, with no setuid or setgid bit, whatever the step did. Returns whether it moved.
    """
    if os.path.islink(source) or not os.path.isdir(source):
        return False
    if uid is not None and gid is not None:
        chown_tree([source], uid, gid)
    for root, dirs, files in os.walk(source):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID | 0o222))
    try:
        os.rename(source, destination)
    except OSError:
        remove_tree(source)  # another job published the same one first
        return False
    return True


def remove_tree(folder: str) -> None:
    """Delete a folder even where it was made read-only."""
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
    shutil.rmtree(folder, ignore_errors=True)


def remove_links(folder: str) -> list[str]:
    """Delete everything in ``folder`` that is not a plain file or folder; return their names.

    The server copies a job's output into the run's artifacts with its own rights: a link
    there would copy the file it names, and a FIFO would block the copy for ever.
    """
    removed: list[str] = []
    for root, dirs, files in os.walk(folder):
        for name in list(dirs) + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(path)
                removed.append(os.path.relpath(path, folder))
                if name in dirs:
                    dirs.remove(name)
    return removed
