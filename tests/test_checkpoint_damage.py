"""Damaged checkpoints: detected by their digests when read, skipped for the newest intact step,
never deleted or altered, and a resumed run that ends bitwise equal to an uninterrupted one.

One training run (steps 4 and 8 saved) is shared: each test damages a copy of it.
"""

import json
import logging
import os
import re
import shutil

import jax
import numpy as np
import pytest
from helpers import tiny_config

from lejepa_jax import export
from lejepa_jax.evaluation import restore
from lejepa_jax.training import checkpointing, loop, resume

TOTAL, SAVED = 12, (4, 8)


def _config(data_dir):
  config = tiny_config(data_dir, TOTAL)
  config.checkpoint_every, config.keep_checkpoints = 4, 5
  config.log_every = 4
  return config


def _params(workdir: str, step: int) -> list[np.ndarray]:
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"), create=False)
  try:
    return [np.asarray(x) for x in jax.tree.leaves(checkpointing.restore_state_only(manager, step))]
  finally:
    manager.close()


def _snapshot(directory: str) -> dict[str, bytes]:
  """Every file under `directory` with its bytes."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


@pytest.fixture(scope="module")
def runs(devices, data_dir, tmp_path_factory):
  """(an uninterrupted run's final parameters, a run stopped after step 8 to damage copies of)."""
  root = tmp_path_factory.mktemp("damage")
  straight, stopped = str(root / "straight"), str(root / "stopped")
  loop.run(_config(data_dir), straight)
  loop.run(_config(data_dir), stopped, stop_after=SAVED[-1])
  assert sorted(int(s) for s in os.listdir(os.path.join(stopped, "checkpoints"))) == list(SAVED)
  return _params(straight, TOTAL), stopped


def _copy(stopped: str, tmp_path) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(stopped, workdir)
  return workdir


def _largest_array_file(step_dir: str) -> str:
  files = [
    os.path.join(root, f)
    for root, _, names in os.walk(os.path.join(step_dir, "state"))
    for f in names
    if os.sep + "d" + os.sep in os.path.join(root, f) + os.sep
  ]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  open(_largest_array_file(step_dir), "wb").close()
  return "truncated"


def _delete(step_dir):
  os.remove(_largest_array_file(step_dir))
  return "missing-file"


def _overwrite(step_dir):
  path = _largest_array_file(step_dir)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(np.random.default_rng(0).bytes(min(4096, size - size // 2)))
  assert os.path.getsize(path) == size
  return "altered"


def _uncommit(step_dir):
  os.remove(os.path.join(step_dir, checkpointing.COMMIT_MARKER))
  return "uncommitted"


def _iterator_state(step_dir):
  data = os.path.join(step_dir, checkpointing.DATA)
  (name,) = [n for n in os.listdir(data) if n.startswith("process_")]
  with open(os.path.join(data, name)) as f:
    text = f.read()
  # Still valid JSON of the same length (one digit of a position changed): only a digest can tell.
  changed = re.sub(r"\d(?=\D*$)", lambda m: str((int(m.group()) + 1) % 10), text, count=1)
  assert changed != text and len(changed) == len(text) and json.loads(changed)
  with open(os.path.join(data, name), "w") as f:
    f.write(changed)
  return "altered"


@pytest.mark.parametrize(
  "damage",
  [_truncate, _delete, _overwrite, _uncommit, _iterator_state],
  ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.slow
def test_a_damaged_latest_step_resumes_from_the_one_before_and_ends_as_an_uninterrupted_run(
  runs, data_dir, tmp_path, caplog, damage
):
  want, stopped = runs
  workdir = _copy(stopped, tmp_path)
  step_dir = os.path.join(workdir, "checkpoints", str(SAVED[-1]))
  kind = damage(step_dir)
  damaged_bytes = _snapshot(step_dir)
  with pytest.raises(checkpointing.DamagedCheckpointError) as error:
    checkpointing.verify_step(os.path.join(workdir, "checkpoints"), SAVED[-1])
  assert error.value.kind == kind
  with caplog.at_level(logging.WARNING, logger="lejepa_jax"):
    loop.run(_config(data_dir), workdir)
  warnings = [
    r.getMessage()
    for r in caplog.records
    if f"step {SAVED[-1]}" in r.getMessage() and "trying the step before" in r.getMessage()
  ]
  assert len(warnings) == 1 and error.value.path in warnings[0], warnings
  for got, expected in zip(_params(workdir, TOTAL), want):
    np.testing.assert_array_equal(got, expected)
  # The damaged step was moved aside with its bytes as they were, and saved again by the rerun.
  aside = os.path.join(workdir, "checkpoints_unreadable", f"{SAVED[-1]}_{kind}")
  assert _snapshot(aside) == damaged_bytes
  assert checkpointing.verify_step(os.path.join(workdir, "checkpoints"), SAVED[-1])


@pytest.mark.slow
def test_when_no_step_is_readable_one_error_lists_them_all_and_nothing_changes(runs, data_dir, tmp_path):
  _, stopped = runs
  workdir = _copy(stopped, tmp_path)
  _truncate(os.path.join(workdir, "checkpoints", "8"))
  _uncommit(os.path.join(workdir, "checkpoints", "4"))
  before = _snapshot(workdir)
  with pytest.raises(resume.UnreadableCheckpointsError) as error:
    loop.run(_config(data_dir), workdir)
  message = str(error.value)
  assert "step 8:" in message and "bytes" in message and "step 4:" in message
  assert "commit marker" in message
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_retention_keeps_the_newest_intact_step_when_the_newer_ones_are_damaged(runs, tmp_path):
  _, stopped = runs
  directory = os.path.join(_copy(stopped, tmp_path), "checkpoints")
  policy = checkpointing.KeepLatestReadable(directory, 1)

  class Info:  # what orbax passes: objects with a step
    def __init__(self, step):
      self.step = step

  infos = [Info(4), Info(8)]
  assert policy.should_preserve(infos, context=None) == [False, True]
  _overwrite(os.path.join(directory, "8"))
  assert policy.should_preserve(infos, context=None) == [True, True]


@pytest.mark.slow
def test_a_step_written_without_a_digest_restores_unverified(runs, data_dir, tmp_path):
  want, stopped = runs
  workdir = _copy(stopped, tmp_path)
  for step in SAVED:  # as checkpoints written before digests existed
    os.remove(os.path.join(workdir, "checkpoints", str(step), checkpointing.DIGEST_FILE))
  assert checkpointing.verify_step(os.path.join(workdir, "checkpoints"), 8) is False
  loop.run(_config(data_dir), workdir)
  for got, expected in zip(_params(workdir, TOTAL), want):
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_evaluation_refuses_a_damaged_step_and_export_takes_the_newest_intact_one(runs, tmp_path):
  _, stopped = runs
  workdir = _copy(stopped, tmp_path)
  _overwrite(os.path.join(workdir, "checkpoints", "8"))
  with pytest.raises(restore.CheckpointError, match="differ from those written"):
    restore.restore_encoder(workdir, 8)
  _, _, step = restore.restore_encoder(workdir)  # the latest readable
  assert step == 4
  latest = export.variables_tree(export.load_encoder(export.export_run(workdir, str(tmp_path / "a"))))
  step4 = export.variables_tree(export.load_encoder(export.export_run(workdir, str(tmp_path / "b"), 4)))
  assert jax.tree.structure(latest) == jax.tree.structure(step4)
  for got, expected in zip(jax.tree.leaves(latest), jax.tree.leaves(step4)):
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_an_ablation_group_resumes_from_its_newest_intact_step(devices, data_dir, tmp_path):
  from lejepa_jax.ablation import group_loop

  config = _config(data_dir)
  sweep = [("loss.sigreg_weight", ["0.0", "0.5"])]
  straight, damaged = str(tmp_path / "straight"), str(tmp_path / "damaged")
  group_loop.run(config, straight, sweep, eval_examples=8)
  assert group_loop.run(config, damaged, sweep, stop_after=SAVED[-1], eval_examples=8) is None
  group_dir = os.path.join(damaged, "checkpoints", "all")
  _overwrite(os.path.join(group_dir, str(SAVED[-1])))
  group_loop.run(config, damaged, sweep, eval_examples=8)  # resumes the group from step 4
  assert os.listdir(os.path.join(damaged, "checkpoints", "all_unreadable")) == ["8_altered"]
  for member in os.listdir(os.path.join(straight, "members")):
    got = _params(os.path.join(damaged, "members", member), TOTAL)
    for x, y in zip(got, _params(os.path.join(straight, "members", member), TOTAL)):
      np.testing.assert_array_equal(x, y)
