"""Progress lines with rate and ETA for long loops outside the train step (evaluation, probes)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("lejepa_jax")


class Progress:
  """Logs `label: done/total unit (rate unit/s, ETA s)` at most every `every_s` seconds, and once
  at the end with the elapsed time.

      progress = Progress("random_init: train-split features", 60000, "images")
      for batch in batches:
        ...
        progress.update(len(batch))
  """

  def __init__(self, label: str, total: int, unit: str, every_s: float = 10.0):
    self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
    self.done = 0
    self.start = self.last = time.perf_counter()

  def update(self, count: int = 1) -> None:
    self.done += count
    now = time.perf_counter()
    if self.done >= self.total:
      log.info("%s: %d %s in %.1f s", self.label, self.done, self.unit, now - self.start)
    elif now - self.last >= self.every_s:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      log.info(
        "%s: %d/%d %s (%.0f %s/s, ETA %.0f s)",
        self.label,
        self.done,
        self.total,
        self.unit,
        rate,
        self.unit,
        (self.total - self.done) / max(rate, 1e-9),
      )
