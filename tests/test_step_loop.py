"""The step loop training runs and ablation groups share (`training.loop.run_steps`), on its own:
which steps it takes, when it logs and saves, the training clock, a preemption notice."""

import os
import signal
import time

import jax.numpy as jnp

from lejepa_jax.training import loop, preemption


class Recorder:
  """Records the loop's calls in order: ("step", n), ("log", n, seconds), ("save", n)."""

  def __init__(self, signal_at: int | None = None):
    self.calls, self.signal_at = [], signal_at

  def step(self, step):
    self.calls.append(("step", step))
    if step == self.signal_at:  # a preemption notice arriving while this step runs
      os.kill(os.getpid(), signal.SIGTERM)
    return {"loss": jnp.asarray(float(step))}

  def log(self, step, metrics, step_time, seconds):
    assert float(metrics["loss"]) == step and step_time >= 0
    self.calls.append(("log", step, seconds))

  def save(self, step):
    self.calls.append(("save", step))


def run(recorder, start, last, seconds_before=0.0, log_every=4, checkpoint_every=6):
  guard = preemption.PreemptionGuard()
  try:
    return loop.run_steps(
      start,
      last,
      recorder.step,
      log_every=log_every,
      checkpoint_every=checkpoint_every,
      guard=guard,
      on_log=recorder.log,
      on_save=recorder.save,
      seconds_before=seconds_before,
    )
  finally:
    guard.restore()


def test_steps_logs_and_saves_on_their_cadence_and_at_the_end():
  recorder = Recorder()
  assert run(recorder, start=2, last=13) == 13
  calls = recorder.calls
  assert [c[1] for c in calls if c[0] == "step"] == list(range(3, 14))
  assert [c[1] for c in calls if c[0] == "log"] == [4, 8, 12, 13]  # every 4th, and the last
  assert [c[1] for c in calls if c[0] == "save"] == [6, 12, 13]  # every 6th, and the last
  # On a step that both logs and saves, the log comes first (the save checks what the log read).
  assert calls.index(("save", 12)) == next(i for i, c in enumerate(calls) if c[:2] == ("log", 12)) + 1


def test_the_training_clock_continues_from_the_resumed_reading():
  recorder = Recorder()
  start = time.perf_counter()
  run(recorder, start=0, last=8, seconds_before=100.0)
  elapsed = time.perf_counter() - start
  seconds = [c[2] for c in recorder.calls if c[0] == "log"]
  assert len(seconds) == 2 and 100.0 <= seconds[0] <= seconds[1] <= 100.0 + elapsed


def test_nothing_to_do_returns_the_start():
  recorder = Recorder()
  assert run(recorder, start=10, last=10) == 10 and recorder.calls == []


def test_a_preemption_notice_logs_and_saves_that_step_then_stops():
  recorder = Recorder(signal_at=5)
  assert run(recorder, start=0, last=20) == 5
  assert recorder.calls[-2:] == [("log", 5, recorder.calls[-2][2]), ("save", 5)]
  assert max(c[1] for c in recorder.calls if c[0] == "step") == 5
