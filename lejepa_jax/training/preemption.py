"""Preemption: a SIGTERM or Ctrl-C becomes "save this step, then leave" on every process."""

from __future__ import annotations

import logging
import os
import signal
import threading

import jax

log = logging.getLogger("lejepa_jax")


class PreemptionGuard:
  """Turns a preemption notice (SIGTERM) or Ctrl-C (SIGINT) into a decision the loop acts on: save
  this step, then leave. The loop asks `stop_at(step)` once per step.

  One process: Python handlers set a flag. After the first signal the previous handlers are back,
  so a second Ctrl-C interrupts at once.

  Several processes (jax.distributed, JAX's preemption service on, its default): a scheduler may
  signal one process only (`scancel --signal=TERM` to one task, a maintenance event on one TPU VM).
  SIGTERM is left to JAX's preemption notifier, which spreads a notice received by any process to
  all of them and agrees on a step (`multihost_utils.reached_preemption_sync_point`): `stop_at`
  is True on every process at that same step, so all save it together and exit with status 0.
  Ctrl-C is turned into that notice (a SIGTERM to this process), so it stops every process too.
  """

  def __init__(self):
    self.requested = False
    self._previous, self._calls = {}, 0
    self._synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    log.warning(
      "received signal %d: checkpointing and exiting after this step (again to interrupt at once)",
      signum,
    )
    self.restore()
    if self._synced:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier: every process stops
    else:
      self.requested = True

  def stop_at(self, step: int) -> bool:
    """Whether the loop should save `step` and leave (the same answer on every process)."""
    if self._synced and not self.requested:
      from jax.experimental import multihost_utils

      # The protocol wants a rising count that every process shares: the calls made so far (a
      # step restarts at 1 in each group of an ablation and at the restored step on a resume).
      self._calls += 1
      if multihost_utils.reached_preemption_sync_point(self._calls):
        log.warning("preemption notice: every process saves step %d and exits", step)
        self.requested = True
    return self.requested

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
