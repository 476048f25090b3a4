"""Every experiment config loads, names only known keys, and builds its model (abstractly)."""

import glob
import importlib.util
import os

import jax
import pytest
from flax import nnx

from lejepa_jax import config_lib, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_builds_its_encoder(path, arg):
  module = load(path)
  assert module.__doc__.strip().splitlines()[0]
  # The command to run this very file: the training job, or the batched ablation for sweep configs.
  name = os.path.basename(path)
  assert any(f"python -m lejepa_jax.{job} --config=configs/{name}" in module.__doc__
             for job in ("main", "ablate"))
  config = module.get_config(arg)
  reference = config_lib.base_config()
  for section in ("data", "loss", "optim", "mesh", "probe"):
    assert set(config[section]) <= set(reference[section]), (section, set(config[section]))
  features, projections = jax.eval_shape(
      lambda x: models.build_encoder(config.model.to_dict(), nnx.Rngs(0))(x),
      jax.ShapeDtypeStruct((2, config.data.global_views["size"], config.data.global_views["size"],
                            config.data.channels), jax.numpy.float32))
  assert projections.shape == (2, config.model.projector["out_dim"])
  if arg == "runlocal":
    assert config.total_steps <= 50 and config.data.global_batch_size <= 32
    assert dict(config.mesh.axes) == {"data": -1}


def test_unknown_config_argument_is_named():
  with pytest.raises(ValueError, match="'epoch'"):
    load(os.path.join(ROOT, "configs", "vit_l.py")).get_config("epoch=3")


def test_vit_l_is_the_paper_recipe():
  config = load(os.path.join(ROOT, "configs", "vit_l.py")).get_config()
  assert config.model.variant == "L/14" and config.loss.sigreg_weight == 0.05
  assert config.loss.num_slices == 1024 and config.data.global_batch_size == 512
  assert (config.optim.lr, config.optim.weight_decay) == (5e-4, 5e-2)
  assert config.data.global_views["count"] == 2 and config.data.local_views["count"] == 6
  assert config.data.local_views["size"] % 14 == 0
