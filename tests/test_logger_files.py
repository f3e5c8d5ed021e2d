"""metrics.csv and TensorBoard events as a live run leaves them: readable after each flush, never half-written."""

import csv

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wm_robotics.logger import MetricsLogger


def _scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_flush_puts_the_scalars_in_tensorboard_at_their_step_while_the_run_goes_on(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(100, {"eval_return": 5.0})
    logger.log(250, {"eval_return": 7.5, "loss/total": 0.5})
    logger.flush()  # not closed: a live run, watched in TensorBoard
    assert _scalars(tmp_path, "eval_return") == [(100, 5.0), (250, 7.5)]
    assert _scalars(tmp_path, "loss/total") == [(250, 0.5)]
    assert [row["step"] for row in csv.DictReader((tmp_path / "metrics.csv").open())] == ["100", "250"]
    logger.close()


def test_a_reader_of_the_old_metrics_csv_keeps_a_whole_file_across_a_flush(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(1, {"eval_return": 1.0})
    logger.flush()
    old = (tmp_path / "metrics.csv").read_text()
    with (tmp_path / "metrics.csv").open() as reader:  # opened before the rewrite: the old file, whole
        logger.log(2, {"eval_return": 2.0, "loss/total": 3.0})
        logger.flush()
        assert reader.read() == old
    assert [row["step"] for row in csv.DictReader((tmp_path / "metrics.csv").open())] == ["1", "2"]
    assert not [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
    logger.close()


def test_counters_are_written_in_full_but_whole_floats_past_2_to_53_to_6_digits(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(1, {"big": 2.0 ** 60, "count": 2 ** 40})
    logger.close()
    [row] = csv.DictReader((tmp_path / "metrics.csv").open())
    assert row["count"] == str(2 ** 40) and row["big"] == f"{2.0 ** 60:.6g}"
