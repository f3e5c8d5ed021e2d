"""metrics.csv: one header row, a column per metric, rows kept across a resume."""

import csv

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wm_robotics.logger import MetricsLogger


def test_csv_header_rows_and_resume(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(100, {"episode_return": 12.5})
    logger.log(200, {"loss/total": 3.0, "eval_return": 50.0})
    logger.log(201, {"eval_return": 60.0, "updates": 1234567, "loss/total": 0.123456789})
    logger.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(rows[0]) == ["step", "episode_return", "eval_return", "loss/total", "updates"]
    assert [r["step"] for r in rows] == ["100", "200", "201"] and rows[2]["updates"] == "1234567"  # counters in full
    assert rows[2]["loss/total"] == "0.123457"  # other values to 6 significant digits
    assert rows[0]["eval_return"] == "" and float(rows[1]["eval_return"]) == 50.0
    assert list((tmp_path / "tensorboard").iterdir())

    resumed = MetricsLogger(tmp_path)  # a resumed run reads the rows back, then replays from its checkpoint
    resumed.drop_after(200)
    resumed.log(201, {"eval_return": 70.0})
    resumed.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["step"], r["eval_return"]) for r in rows] == [("100", ""), ("200", "50"), ("201", "70")]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()  # the first run's point at 201 is purged, not shown beside the resumed one's
    assert [(event.step, event.value) for event in events.Scalars("eval_return")] == [(200, 50.0), (201, 70.0)]
