"""Where the scheduler and the local bus put their sockets when the data directory's path is long."""

from __future__ import annotations

import os

import pytest

from trainflow.events.bus import LocalListener, private_folder, run_folder
from trainflow.jobs.scheduler import notify_socket_path
from trainflow.settings import Settings


def test_a_long_data_dir_gets_one_short_socket_path_for_every_process(tmp_path):
    settings = Settings(data_dir=tmp_path / ("d" * 120), database_url="sqlite://")
    first, again = notify_socket_path(settings), notify_socket_path(settings)
    assert first == again  # every worker finds the scheduler's socket
    assert len(str(first)) < 100
    assert first.parent == run_folder(settings)
    other = Settings(data_dir=tmp_path / ("e" * 120), database_url="sqlite://")
    assert notify_socket_path(other) != first  # another data directory, another folder


def test_a_socket_folder_others_may_enter_is_refused(tmp_path):
    folder = tmp_path / "run"
    assert private_folder(folder) == folder
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match="mode 0700"):
        private_folder(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_socket_folder_another_user_made_first_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(RuntimeError, match="must belong to this user"):
        private_folder(folder)


def test_the_scheduler_can_bind_after_a_worker_s_bus_listener_made_the_run_folder(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url="sqlite://")
    old_umask = os.umask(0o022)
    listener = LocalListener(run_folder(settings) / "bus", lambda message: None)
    try:
        listener.start()  # a web worker, up before the worker that runs the scheduler
    finally:
        os.umask(old_umask)
    try:
        assert private_folder(notify_socket_path(settings).parent) == run_folder(settings)
    finally:
        listener.stop()
