"""The real programs lower for GPUs and TPUs from this CPU host (`jax.export`, platforms cuda and
tpu): the train step of a ViT (with the accelerators' attention) and of a ResNet, on the 8-device
mesh, and evaluation's feature function. A lowering error on an accelerator path fails here."""

import functools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from helpers import tiny_config

from lejepa_jax import config_lib
from lejepa_jax.evaluation import extraction
from lejepa_jax.training import steps, train_state

ACCELERATORS = ("cuda", "tpu")


def _resnet_config(data_dir):
  config = tiny_config(data_dir, 2)
  config.model = config_lib.model_config(
    "resnet", "18", projector=dict(hidden_dim=32, out_dim=8), width=8, small_stem=True, in_channels=3
  )
  return config


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_the_train_step_lowers_for_gpus_and_tpus(devices, data_dir, family):
  config = tiny_config(data_dir, 2) if family == "vit" else _resnet_config(data_dir)
  exported = steps.export_train_step(config, ACCELERATORS)
  assert exported.platforms == ACCELERATORS and exported.nr_devices == 8
  text = exported.mlir_module()
  assert "stablehlo" in text
  if family == "vit":  # the accelerators' attention, not the CPU's head-major form
    assert "head_major_attention" not in text
    assert "head_major_attention" in steps.export_train_step(config, ("cpu",)).mlir_module()


@pytest.mark.slow
def test_the_feature_function_lowers_for_gpus_and_tpus(data_dir):
  config = tiny_config(data_dir)
  graphdef, state = nnx.split(train_state.build_train_objects(config).model)
  forward = extraction.feature_function(tuple(config.data.mean), tuple(config.data.std), "embed", 1)
  images = jax.ShapeDtypeStruct((4, 16, 16, 3), jnp.uint8)
  exported = jax.export.export(jax.jit(functools.partial(forward, graphdef)), platforms=ACCELERATORS)(
    state, images
  )
  features, projections = exported.out_avals
  assert exported.platforms == ACCELERATORS
  assert features.shape[0] == projections.shape[0] == 4
