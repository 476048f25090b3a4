"""Progress lines (lejepa_jax.evaluation.progress): rate and ETA while running, the total time at the
end."""

import re

from lejepa_jax.evaluation import progress


def test_progress_reports_rate_eta_and_the_end(caplog, monkeypatch):
  clock = iter([0.0, 2.0, 4.0, 6.0])  # start, then one reading per update
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  with caplog.at_level("INFO", logger="lejepa_jax"):
    meter = progress.Progress("features", 300, "images", every_s=1.0)
    meter.update(100)  # 100 images in 2 s: 50/s, 200 left -> ETA 4 s
    meter.update(100)
    meter.update(100)  # done: the elapsed time, no ETA
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == "features: 100/300 images (50 images/s, ETA 4 s)"
  assert lines[1] == "features: 200/300 images (50 images/s, ETA 2 s)"
  assert re.fullmatch(r"features: 300 images in 6\.0 s", lines[2])
  assert len(lines) == 3
