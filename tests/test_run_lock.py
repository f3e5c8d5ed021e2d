"""One training process per run folder: a second Trainer on a folder in training is refused before it writes, and a
killed holder leaves no stale lock."""

import signal
import subprocess
import sys

import pytest

from tests.configs import tiny_config
from wm_robotics.run_lock import RunFolderBusyError, RunLock
from wm_robotics.train import Trainer

HOLD = ("import sys, time\n"
        "from wm_robotics.run_lock import RunLock\n"
        "lock = RunLock(sys.argv[1])\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")


def test_a_second_trainer_on_a_folder_in_training_is_refused_before_it_writes(tmp_path):
    first = Trainer(tiny_config("steps=120", "eval_every=1000"), tmp_path)
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    with pytest.raises(RunFolderBusyError, match=rf"{tmp_path} is being trained by an earlier Trainer of this "
                                                 r"process: close\(\) it or let its run\(\) end"):
        Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true"), tmp_path)
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before  # no file of its own
    first.run()  # releases the folder when it ends
    second = Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true"), tmp_path)
    second.run()
    assert second.counters["env_steps"] == 240


def test_a_killed_holder_leaves_the_folder_free_and_a_live_one_keeps_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunFolderBusyError, match=rf"\(pid {holder.pid} on "):
            RunLock(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(tmp_path)  # the kernel dropped the dead process's lock
    lock.release()
    RunLock(tmp_path).release()


def test_a_refused_resume_and_close_leave_the_folder_free_in_the_same_process(tmp_path):
    Trainer(tiny_config("steps=120", "eval_every=1000"), tmp_path).run()
    refused = Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true", "env.action_repeat=4"), tmp_path)
    with pytest.raises(ValueError, match="env.action_repeat 2 -> 4"):
        refused.start()  # still referenced here: the refusal itself gave the folder back
    inspected = Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true"), tmp_path)
    inspected.start()
    inspected.close()
    Trainer(tiny_config("steps=240", "eval_every=1000", "resume=true"), tmp_path).run()


def test_a_filesystem_without_flock_trains_unlocked_with_a_warning(tmp_path, monkeypatch):
    import errno

    import wm_robotics.run_lock as run_lock

    def unsupported(handle, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(run_lock.fcntl, "flock", unsupported)
    with pytest.warns(UserWarning, match=r"cannot lock .*Function not implemented.*nothing stops a second process"):
        lock = RunLock(tmp_path)
    lock.release()
