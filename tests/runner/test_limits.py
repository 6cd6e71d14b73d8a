"""Per-job limits on their own: settings in, rlimits, cgroups and measurements out (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainflow.runner import enforcement, limits
from trainflow.runner.limits import Limits

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="cgroups, rlimits and /proc are Linux's")

CGROUP_FILE = """\
12:pids:/user.slice/user-1000.slice/session-3.scope
4:memory:/user.slice/user-1000.slice/session-3.scope
1:name=systemd:/user.slice/user-1000.slice/session-3.scope
0::/system.slice/trainflow.service/server
"""

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_own_cgroups_reads_v1_controllers_and_the_v2_path():
    own = enforcement.own_cgroups(CGROUP_FILE)
    assert own["memory"] == "/user.slice/user-1000.slice/session-3.scope"
    assert own["pids"] == "/user.slice/user-1000.slice/session-3.scope"
    assert own[""] == "/system.slice/trainflow.service/server"


def test_cgroup_mounts_finds_memory_pids_and_cgroup2():
    mounts = enforcement.cgroup_mounts(MOUNTINFO)
    assert mounts["memory"] == ("/", Path("/sys/fs/cgroup/memory"))
    assert mounts["pids"] == ("/docker/abc", Path("/sys/fs/cgroup/pids"))
    assert mounts[""] == ("/", Path("/sys/fs/cgroup/unified"))


def test_a_cgroup_path_under_a_mounted_subtree_is_found_relative_to_it():
    mounts = {"pids": ("/docker/abc", Path("/sys/fs/cgroup/pids"))}
    assert enforcement._folder(mounts, {"pids": "/docker/abc/job"}, "pids") == Path("/sys/fs/cgroup/pids/job")


def test_a_cgroup_outside_the_mounted_subtree_is_not_reachable():
    mounts = {"pids": ("/docker/abc", Path("/sys/fs/cgroup/pids"))}
    assert enforcement._folder(mounts, {"pids": "/elsewhere"}, "pids") is None


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ("memory_limit", "memory limit of 4096 MB exceeded"),
        ("process_limit", "process limit of 512 processes and threads reached"),
        ("disk_limit", "disk limit of 10240 MB exceeded in the job's folder"),
        ("open_files_limit", "open files limit of 4096 reached"),
    ],
)
def test_each_reason_names_its_limit(reason, text):
    assert limits.message(reason, Limits(4096, 512, 4096, 10240)) == text


def test_limits_round_trip_through_json():
    chosen = Limits(memory_mb=64, processes=32, open_files=100, disk_mb=5, cgroup="off")
    assert Limits.from_json(json.loads(json.dumps(chosen.to_json()))) == chosen


@pytest.mark.parametrize("value", [-1, "512", 1.5, True])
def test_limits_refuse_what_is_not_a_whole_number(value):
    with pytest.raises(ValueError, match="processes"):
        Limits.from_json({"processes": value})


def test_missing_limits_mean_none():
    assert Limits.from_json(None).is_unlimited


def test_rlimits_cover_only_what_no_cgroup_enforces():
    chosen = Limits(memory_mb=64, processes=32, open_files=100, disk_mb=5)
    assert limits.rlimits_for(chosen, has_memory_cgroup=True, has_pids_cgroup=True) == {
        "open_files": 100,
        "file_size_bytes": 5 * limits.MB,
    }
    assert limits.rlimits_for(chosen, has_memory_cgroup=False, has_pids_cgroup=False) == {
        "data_bytes": 64 * limits.MB,
        "processes": 32,
        "open_files": 100,
        "file_size_bytes": 5 * limits.MB,
    }


def _in_child(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_apply_rlimits_lowers_soft_and_hard_limits():
    out = _in_child(
        """
        import resource
        from trainflow.runner.limits import apply_rlimits
        print(apply_rlimits({"open_files": 64, "file_size_bytes": 1 << 20, "data_bytes": 1 << 30}))
        print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_FSIZE))
        print(resource.getrlimit(resource.RLIMIT_DATA))
        """
    )
    assert out.splitlines() == [
        "['RLIMIT_DATA', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE']",
        "(64, 64) (1048576, 1048576)",
        "(1073741824, 1073741824)",
    ]


def test_the_process_rlimit_is_left_alone_outside_a_user_namespace():
    # Outside a namespace of the job's own it would count every process of the server's user.
    out = _in_child(
        """
        import resource
        from trainflow.runner.limits import apply_rlimits, in_own_user_namespace
        before = resource.getrlimit(resource.RLIMIT_NPROC)
        applied = apply_rlimits({"processes": 5})
        print(in_own_user_namespace(), applied, resource.getrlimit(resource.RLIMIT_NPROC) == before)
        """
    )
    assert out.split() == ["False", "[]", "True"]


def test_a_memory_rlimit_fails_the_allocation_not_the_machine():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from trainflow.runner.limits import apply_rlimits; apply_rlimits({'data_bytes': 256 << 20});"
            "x = bytearray(1 << 30)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "MemoryError" in result.stderr


def test_unknown_rlimits_are_refused():
    with pytest.raises(ValueError, match="unknown rlimit"):
        limits.apply_rlimits({"cpu": 1})


def test_folder_bytes_counts_blocks_once_per_hard_link_and_skips_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "data").write_bytes(os.urandom(1 << 20))
    os.link(tmp_path / "a" / "data", tmp_path / "a" / "again")
    (tmp_path / "a" / "link").symlink_to("/usr")
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(1 << 30)  # a gigabyte that takes no disk
    used = enforcement.folder_bytes([tmp_path / "a", tmp_path / "sparse", tmp_path / "missing"])
    assert 1 << 20 <= used < (1 << 20) + 64 * 1024


def test_folder_bytes_walks_nested_folders(tmp_path):
    deep = tmp_path / "x" / "y" / "z"
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"1" * 100_000)
    assert enforcement.folder_bytes([tmp_path]) >= 100_000


def test_job_processes_are_descendants_and_the_session():
    table = {
        10: enforcement.ProcessInfo(10, 1, 10, 1),
        11: enforcement.ProcessInfo(11, 10, 10, 4),
        12: enforcement.ProcessInfo(12, 11, 10, 1),
        13: enforcement.ProcessInfo(13, 1, 10, 2),  # orphaned, reparented to init, same session
        14: enforcement.ProcessInfo(14, 12, 14, 1),  # a descendant that started a session of its own
        20: enforcement.ProcessInfo(20, 1, 20, 9),  # someone else
    }
    assert [p.pid for p in enforcement.job_processes(10, table)] == [10, 11, 12, 13, 14]


def test_read_processes_sees_this_process_and_its_threads():
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        me = enforcement.read_processes()[os.getpid()]
    finally:
        stop.set()
        thread.join()
    assert me.ppid == os.getppid()
    assert me.threads >= 2


def test_the_log_tail_names_an_rlimit_failure(tmp_path):
    records = [
        {"n": 1, "ts": 0, "stream": "stdout", "line": "allocating"},
        {"n": 2, "ts": 0, "stream": "stderr", "line": "Traceback (most recent call last):"},
        {"n": 3, "ts": 0, "stream": "stderr", "line": "MemoryError"},
    ]
    (tmp_path / "logs.ndjson").write_text("".join(json.dumps(r) + "\n" for r in records))
    enforced = enforcement.JobLimits(Limits(memory_mb=64), tmp_path, "unused")
    assert enforced.final_reason(exit_code=1, signal_number=None) == "memory_limit"


def test_a_memory_error_under_a_memory_cgroup_is_the_jobs_own_failure(tmp_path):
    (tmp_path / "logs.ndjson").write_text(json.dumps({"stream": "stderr", "line": "MemoryError"}) + "\n")
    enforced = enforcement.JobLimits(Limits(memory_mb=64), tmp_path, "unused")
    enforced.cgroup = enforcement.Cgroup(2, tmp_path / "no-cgroup", None)
    assert enforced.final_reason(exit_code=1, signal_number=None) is None


def test_a_job_killed_by_sigxfsz_hit_the_disk_limit(tmp_path):
    enforced = enforcement.JobLimits(Limits(disk_mb=1), tmp_path, "unused")
    assert enforced.final_reason(exit_code=None, signal_number=25) == "disk_limit"


def test_disk_over_the_limit_is_found_by_the_walk(tmp_path):
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "big").write_bytes(os.urandom(2 * limits.MB))
    enforced = enforcement.JobLimits(Limits(disk_mb=1), tmp_path, "unused")
    assert enforced.check(None) == "disk_limit"


THREADS = """
import threading, time
for _ in range(8):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
time.sleep(30)
"""


def test_processes_over_the_limit_are_counted_without_a_cgroup(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", THREADS], start_new_session=True)
    try:
        enforced = enforcement.JobLimits(Limits(processes=5, cgroup="off"), tmp_path, "unused")
        deadline = time.monotonic() + 10
        reason = None
        while reason is None and time.monotonic() < deadline:
            reason = enforced.check(child.pid, now=time.monotonic() + 1000)
            enforced._next_processes = 0.0
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert reason == "process_limit"


def test_describe_names_each_limit_and_its_mechanism(tmp_path):
    enforced = enforcement.JobLimits(Limits(64, 32, 100, 5, cgroup="off"), tmp_path, "unused")
    enforced.start()
    assert enforced.describe() == (
        "trainflow: limits: 64 MB of memory (rlimit (per process) + supervisor), 32 processes and threads "
        "(rlimit (in the job's user namespace) + supervisor), 100 open files (rlimit), "
        "5 MB of disk (supervisor + rlimit (file size))"
    )


HAS_CGROUP = enforcement.find_cgroup_parent() is not None


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup here (root with cgroup v1, or a delegated v2)")
def test_a_cgroup_holds_the_job_reports_the_oom_kill_and_is_removed(tmp_path):
    enforced = enforcement.JobLimits(
        Limits(memory_mb=64, processes=16), tmp_path, f"test-limits-{os.getpid()}"
    )
    enforced.start()
    assert enforced.cgroup is not None
    try:
        hog = subprocess.Popen(
            [sys.executable, "-c", "x = bytearray(512 << 20); x[::4096] = b'1' * len(x[::4096])"],
            preexec_fn=enforced.preexec,
        )
        assert hog.wait(timeout=60) == -9
        assert enforced.final_reason(exit_code=None, signal_number=9) == "memory_limit"
    finally:
        enforced.close()
    assert all(not folder.exists() for folder in enforced.cgroup.folders)


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup here (root with cgroup v1, or a delegated v2)")
def test_a_cgroup_refuses_forks_past_the_limit_and_kills_whatever_is_left(tmp_path):
    enforced = enforcement.JobLimits(Limits(processes=8), tmp_path, f"test-limits-{os.getpid()}-pids")
    enforced.start()
    assert enforced.cgroup is not None and enforced.cgroup.pids is not None
    try:
        bomb = subprocess.Popen(
            ["bash", "-c", "for i in $(seq 30); do sleep 60 & done; wait"],
            preexec_fn=enforced.preexec,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while enforced.check(bomb.pid) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert enforced.reason == "process_limit"
        assert 0 < len(enforced.cgroup.pids_inside()) <= 8
    finally:
        enforced.close()
        bomb.wait(timeout=10)
    assert not enforced.cgroup.pids.exists()


def test_a_job_that_cannot_join_its_cgroup_does_not_run(tmp_path):
    enforced = enforcement.JobLimits(Limits(memory_mb=64), tmp_path, "unused")
    enforced.cgroup = enforcement.Cgroup(1, tmp_path / "not-a-cgroup", None)
    result = subprocess.run(
        [sys.executable, "-c", "print('ran')"],
        preexec_fn=enforced.preexec,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 126
    assert result.stdout == ""
    assert "could not put the job in its cgroup" in result.stderr


def test_a_delegated_cgroup_v2_folder_gets_a_cgroup_per_job(tmp_path):
    # A stand-in for a delegated subtree: the files a kernel shows, as plain files.
    parent = tmp_path / "trainflow.service"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("cpu io memory pids\n")
    (parent / "cgroup.subtree_control").write_text("cpu\n")
    cgroup = enforcement.make_cgroup("job-7", Limits(memory_mb=64, processes=32, cgroup=str(parent)))
    assert cgroup is not None
    assert (cgroup.version, cgroup.memory, cgroup.pids) == (2, parent / "job-7", parent / "job-7")
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (parent / "job-7" / "memory.max").read_text() == str(64 * limits.MB)
    assert (parent / "job-7" / "memory.swap.max").read_text() == "0"
    assert (parent / "job-7" / "memory.oom.group").read_text() == "1"
    assert (parent / "job-7" / "pids.max").read_text() == "32"


def test_cgroup_v2_counters_name_the_limit(tmp_path):
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    (tmp_path / "pids.events").write_text("max 0\n")
    cgroup = enforcement.Cgroup(2, tmp_path, tmp_path)
    assert cgroup.oom_kills() == 1
    assert cgroup.fork_refusals() == 0


def test_a_v2_folder_without_the_controllers_is_not_used(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert enforcement.make_cgroup("job-1", Limits(memory_mb=64, cgroup=str(tmp_path))) is None


def test_cgroup_off_means_none(tmp_path):
    assert enforcement.find_cgroup_parent("off") is None


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup here (root with cgroup v1, or a delegated v2)")
def test_a_lost_jobs_cgroup_is_emptied_and_removed_and_no_other_one(tmp_path):
    chosen = Limits(memory_mb=64, processes=16)
    lost = enforcement.JobLimits(chosen, tmp_path, enforcement.cgroup_name(tmp_path, 5, 999_001))
    other = enforcement.JobLimits(chosen, tmp_path, enforcement.cgroup_name(tmp_path, 50, 999_002))
    lost.start()
    other.start()
    try:
        # A process that left the job's process group and session: only its cgroup still holds it.
        escaped = subprocess.Popen(["sleep", "60"], preexec_fn=lost.preexec, start_new_session=True)
        assert enforcement.remove_leftover_cgroups(chosen, tmp_path, 5) == len(lost.cgroup.folders)
        assert escaped.wait(timeout=10) == -9
        assert not any(folder.exists() for folder in lost.cgroup.folders)
        assert all(folder.exists() for folder in other.cgroup.folders)
    finally:
        lost.close()
        other.close()


def test_cgroup_names_differ_per_server_job_and_supervisor(tmp_path):
    names = {
        enforcement.cgroup_name(tmp_path / "a", 1, 10),
        enforcement.cgroup_name(tmp_path / "b", 1, 10),
        enforcement.cgroup_name(tmp_path / "a", 2, 10),
        enforcement.cgroup_name(tmp_path / "a", 1, 11),
    }
    assert len(names) == 4
    prefix = enforcement.cgroup_name(tmp_path, 1, None)
    assert enforcement.cgroup_name(tmp_path, 1, 10).startswith(prefix)
    assert not enforcement.cgroup_name(tmp_path, 10, 10).startswith(prefix)
