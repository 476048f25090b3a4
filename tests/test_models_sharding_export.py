"""Encoders on meshes (global BatchNorm, FSDP memory) and the export round trip."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lejepa_jax import export, models
from lejepa_jax.scale import sharding

RESNET = dict(
  name="resnet", variant="18", small_stem=True, in_channels=1, projector=dict(hidden_dim=64, out_dim=16)
)
# ViT-Mi (2 blocks, width 64): the layouts and round trips do not depend on depth, and its two
# initialisers compile in seconds.
VIT = dict(
  name="vit", variant="Mi/8", img_size=32, num_registers=2, projector=dict(hidden_dim=64, out_dim=16)
)


@nnx.jit
def _train_forward(encoder, images):
  return encoder(images)


@pytest.mark.parametrize(
  "mesh_axes,axis_type",
  [({"data": 8}, "auto"), ({"data": 2, "fsdp": 4}, "auto"), ({"data": 8}, "explicit")],
)
@pytest.mark.slow
def test_sharded_forward_equals_unsharded_with_global_batchnorm(devices, mesh_axes, axis_type):
  images = jax.random.uniform(jax.random.key(0), (16, 16, 16, 1))
  # Make per-device batches differ strongly, so per-device BatchNorm statistics would show.
  images = images * jnp.repeat(jnp.arange(1.0, 9.0), 2)[:, None, None, None]
  reference = models.create_encoder(RESNET)
  want_features, want_proj = _train_forward(reference, images)
  mesh = sharding.make_mesh(mesh_axes, axis_type)
  encoder = models.create_encoder(RESNET, mesh=mesh)
  with jax.set_mesh(mesh):
    sharded_images = jax.device_put(images, NamedSharding(mesh, sharding.batch_spec(mesh, 4)))
    features, proj = _train_forward(encoder, sharded_images)
  assert len(features.sharding.device_set) == 8
  np.testing.assert_allclose(features, want_features, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(proj, want_proj, rtol=2e-5, atol=2e-5)
  # The running statistics were updated from the global batch as well.
  np.testing.assert_allclose(
    encoder.backbone.stem_bn.mean[...], reference.backbone.stem_bn.mean[...], rtol=1e-5, atol=1e-6
  )


@pytest.mark.slow
def test_fsdp_params_are_created_sharded(devices):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  encoder = models.create_encoder(VIT, mesh=mesh)
  kernel = encoder.backbone.blocks[0].mlp.fc1.kernel[...]
  assert kernel.sharding.spec[0] == "fsdp"
  assert kernel.addressable_shards[0].data.shape == (64 // 4, 128)  # Mi: width 64, MLP 128


@pytest.mark.slow
def test_an_encoder_created_in_part_leaves_the_rest_abstract_and_draws_the_same_values(devices):
  """`initialise=` creates only the variables it picks (here the projector's), with the values and
  layouts a full creation gives them; the others stay ShapeDtypeStructs carrying their shardings,
  for a loader to assign."""
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  full = models.create_encoder(VIT, seed=3, mesh=mesh)
  part = models.create_encoder(VIT, seed=3, mesh=mesh, initialise=nnx.PathContains("projector"))
  reference = dict(nnx.to_flat_state(nnx.state(full)))
  for path, variable in nnx.to_flat_state(nnx.state(part)):
    value, want = variable.get_value(), reference[path].get_value()
    if path[0] == "projector":
      assert isinstance(value, jax.Array), path
      np.testing.assert_array_equal(value, want, err_msg=str(path))
    else:
      assert isinstance(value, jax.ShapeDtypeStruct), path
      assert (value.shape, value.dtype, value.sharding) == (want.shape, want.dtype, want.sharding)


@pytest.mark.slow
def test_vit_l14_under_fsdp_holds_an_eighth_of_its_bytes_per_device(devices):
  mesh = sharding.make_mesh({"fsdp": 8})
  _, state = sharding.abstract_state(
    lambda: models.build_backbone({"name": "vit", "variant": "L/14"}, models.make_rngs(0)), mesh
  )
  per_device = sharding.bytes_per_device(state)
  total = 4 * models.count_params("vit", "L/14")
  assert len(per_device) == 8
  for nbytes in per_device.values():
    assert total / 8 <= nbytes < 1.01 * total / 8, (nbytes, total / 8)


def test_tensor_parallel_rules_shard_mlp_and_heads(devices):
  mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
  _, state = sharding.abstract_state(
    lambda: models.build_backbone({"name": "vit", "variant": "S/16"}, models.make_rngs(0)), mesh
  )
  block = state["blocks"][0]
  assert block["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
  assert block["attn"]["qkv"]["kernel"].sharding.spec == P("fsdp", "tensor")


def _trained_bn_encoder(config):
  encoder = models.create_encoder(config)
  images = jax.random.uniform(jax.random.key(1), (8, 32, 32, config.get("in_channels", 3)))
  _train_forward(encoder, images)  # updates BatchNorm running statistics
  encoder.eval()
  return encoder, images


@nnx.jit
def _eval_forward(encoder, images):
  return encoder(images)


@pytest.mark.slow
@pytest.mark.parametrize("config", [RESNET, VIT], ids=["resnet", "vit"])
def test_export_round_trip_is_bit_exact(tmp_path, config):
  encoder, images = _trained_bn_encoder(config)
  path = export.save_encoder(encoder, config, str(tmp_path / "enc"))
  loaded = export.load_encoder(path)
  for got, want in zip(_eval_forward(loaded, images), _eval_forward(encoder, images)):
    np.testing.assert_array_equal(got, want)
  meta = json.load(open(os.path.join(path, "config.json")))
  assert meta["model"]["name"] == config["name"] and meta["with_projector"]
  with pytest.raises(FileExistsError):
    export.save_encoder(encoder, config, path)


@pytest.mark.slow
def test_backbone_only_export_loads_onto_a_mesh(tmp_path, devices):
  encoder, images = _trained_bn_encoder(RESNET)
  path = export.save_encoder(encoder, RESNET, str(tmp_path / "backbone"), with_projector=False)
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  loaded = export.load_encoder(path, mesh=mesh)
  assert loaded.projector is None
  kernel = loaded.backbone.blocks[-1].conv2.kernel[...]
  assert kernel.sharding.mesh.shape == mesh.shape and kernel.sharding.spec[-1] == "fsdp"
  features, projections = _eval_forward(loaded, images)
  assert projections is None
  np.testing.assert_allclose(features, _eval_forward(encoder, images)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_safetensors_export_holds_every_variable(tmp_path):
  from safetensors.numpy import load_file

  encoder, _ = _trained_bn_encoder(RESNET)
  path = export.export_safetensors(encoder, str(tmp_path / "model.safetensors"))
  arrays = load_file(path)
  np.testing.assert_array_equal(arrays["params.backbone.stem.kernel"], encoder.backbone.stem.kernel[...])
  np.testing.assert_array_equal(
    arrays["batch_stats.backbone.stem_bn.mean"], encoder.backbone.stem_bn.mean[...]
  )
  num_params = sum(v.size for k, v in arrays.items() if k.startswith("params."))
  expected = sum(x.size for x in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
  assert num_params == expected


def test_loading_a_missing_export_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="save_encoder"):
    export.load_encoder(str(tmp_path))
