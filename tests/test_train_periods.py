"""When the training loop logs, evaluates and checkpoints (``Trainer._periodic`` on a stub: no env, no model): logs
once ``log_every`` has passed, checkpoints only at episode boundaries (or the end) once ``checkpoint_every`` has
passed, a checkpoint at the next boundary after every evaluation, and the metrics on disk before each checkpoint."""

from types import SimpleNamespace

from wm_robotics.train import Trainer


class Clock:
    """Just what ``Trainer._periodic`` reads and calls, recording what it did."""

    _periodic = Trainer._periodic

    def __init__(self, **periods):
        self.cfg = {"log_every": 20, "eval_every": 100, "checkpoint_every": 40, **periods}
        self.offline, self.clock, self.done = None, 0, []
        self.counters = {"updates": 0, "env_steps": 0, "last_eval": -1}
        self._last = {"log": 0, "time": 0.0, "updates": 0, "env_steps": 0, "checkpoint": 0}
        self.logger = SimpleNamespace(log=lambda step, row: self.done.append(("log", step)), flush=lambda: self.done
                                      .append(("flush", self.clock)), rows=[{"eval_return": 0.0}])

    def evaluate(self):
        self.done.append(("eval", self.clock))
        self.counters["last_eval"] = self.clock
        return {"eval_return": 0.0}

    def save_if_best(self, results):
        return False

    def save(self):
        self.done.append(("save", self.clock))

    def at(self, steps, total, boundaries=()):
        bar = SimpleNamespace(set_postfix=lambda **kwargs: None)
        for step in steps:
            self.clock = self.counters["env_steps"] = step
            self._periodic(total, {"loss/total": 1.0}, bar, boundary=step in boundaries)
        return self.done


def test_rows_are_logged_once_log_every_has_passed_exactly():
    done = Clock(eval_every=10**9).at([10, 20, 30, 40, 50, 60, 70, 80], total=1000)
    assert [step for what, step in done if what == "log"] == [20, 40, 60, 80]


def test_checkpoints_wait_for_an_episode_boundary_once_checkpoint_every_has_passed():
    done = Clock(eval_every=10**9).at([20, 40, 50, 60, 80, 90, 100, 130, 200], total=200, boundaries={50, 90, 100})
    assert [step for what, step in done if what == "save"] == [50, 90, 200]  # not 40 (no boundary), 100 (too soon)
    for index, (what, step) in enumerate(done):
        if what == "save":  # a resume keeps the rows up to its checkpoint: they are flushed first
            assert done[index - 1] == ("flush", step)


def test_an_evaluation_is_followed_by_a_checkpoint_at_the_next_boundary():
    done = Clock().at([90, 100, 110, 120, 130], total=1000, boundaries={90, 110, 130})
    assert [(what, step) for what, step in done if what in ("eval", "save")] == [
        ("save", 90), ("eval", 100), ("save", 110)]  # 110 though the last save was 20 steps before
