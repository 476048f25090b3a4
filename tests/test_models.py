"""Encoders: parameter counts, shapes, position-embedding interpolation, dtypes, bad input."""

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lejepa_jax import models


def _vit_params(width, depth, mlp, patch, channels=3, img=224):
  """Closed-form ViT parameter count (patch embed, CLS, positions, blocks, final norm)."""
  grid = (img // patch) ** 2
  block = 4 * width + (3 * width**2 + 3 * width) + (width**2 + width) + 2 * width * mlp + mlp + width
  return patch**2 * channels * width + width + width + grid * width + depth * block + 2 * width


# Published sizes without the classification head: ViT (the figures, g: 40 blocks, width
# 1408, MLP 6144); torchvision ResNets (11,689,512 / 21,797,672 / 25,557,032 minus the 1000-way fc);
# ConvNeXt-V2 (3.71M ... 660.29M as published, minus the 1000-way fc of the last stage's width);
# timm's resnext26ts (10.30M) and Swin-T (28.29M, Liu et al. 2021) minus their 1000-way fc;
# LeViT-128 (9.2M, Graham et al. 2021) minus its two heads (BatchNorm + 1000-way fc each).
PUBLISHED = {
  ("vit", "S/16"): 21.7e6,
  ("vit", "B/16"): 85.8e6,
  ("vit", "L/14"): 303e6,
  ("vit", "H/14"): 631e6,
  ("vit", "g/14"): _vit_params(1408, 40, 6144, 14),
  ("resnet", "18"): 11_689_512 - 513_000,
  ("resnet", "34"): 21_797_672 - 513_000,
  ("resnet", "50"): 25_557_032 - 2_049_000,
  ("convnextv2", "atto"): 3.71e6 - 321_000,
  ("convnextv2", "femto"): 5.23e6 - 385_000,
  ("convnextv2", "pico"): 9.07e6 - 513_000,
  ("convnextv2", "nano"): 15.62e6 - 641_000,
  ("convnextv2", "tiny"): 28.64e6 - 769_000,
  ("convnextv2", "base"): 88.72e6 - 1_025_000,
  ("convnextv2", "large"): 197.96e6 - 1_537_000,
  ("convnextv2", "huge"): 660.29e6 - 2_817_000,
  ("resnext", "26ts"): 10.30e6 - 2_049_000,
  ("swin", "tiny"): 28.29e6 - 769_000,
  ("levit", "128"): 9.2e6 - 2 * (2 * 384 + 385_000),
}


@pytest.mark.slow
@pytest.mark.parametrize("name,variant", sorted(PUBLISHED))
def test_parameter_counts_match_published_sizes(name, variant):
  count = models.count_params(name, variant)
  assert abs(count - PUBLISHED[name, variant]) < 0.005 * PUBLISHED[name, variant], count


@pytest.mark.parametrize(
  "size,dims",
  [("Ti", (192, 12, 768)), ("S", (384, 12, 1536)), ("B", (768, 12, 3072)), ("L", (1024, 24, 4096))],
)
@pytest.mark.parametrize("patch", [8, 14, 16])
def test_vit_count_equals_closed_form(size, dims, patch):
  assert models.count_params("vit", f"{size}/{patch}") == _vit_params(*dims, patch)


TINY = {
  "vit": dict(name="vit", variant="Ti6/16", img_size=32),
  "vit_registers_no_cls": dict(
    name="vit", variant="Ti6/8", img_size=32, num_registers=4, class_token=False, drop_path=0.1
  ),
  "resnet18_small": dict(name="resnet", variant="18", small_stem=True, in_channels=1),
  "resnet50": dict(name="resnet", variant="50"),
  "convnextv2": dict(name="convnextv2", variant="atto", drop_path=0.1),
  "resnext26ts": dict(name="resnext", variant="26ts"),
  "resnet26t": dict(name="resnet", variant="26", stem="deep_tiered", avg_down=True),
  "swin": dict(name="swin", variant="mini", img_size=32, drop_path=0.1),
  "levit": dict(name="levit", variant="mini", img_size=32, drop_path=0.1),
  "efficientnet_g8_gn": dict(name="efficientnet", variant="b0", norm="group", group_size=8),
  "inception_next": dict(name="inception_next", variant="atto", drop_path=0.1),
  "maxvit_rmlp": dict(name="maxvit", variant="pico", img_size=32, rel_pos="mlp", drop_path=0.1),
  "pe_vit": dict(name="pe_vit", variant="Ti/16", img_size=64, drop_path=0.1),
}
EXPECTED_DIMS = {
  "vit": 384,
  "vit_registers_no_cls": 384,
  "resnet18_small": 512,
  "resnet50": 2048,
  "convnextv2": 320,
  "resnext26ts": 2048,
  "resnet26t": 2048,
  "swin": 32,
  "levit": 48,
  "efficientnet_g8_gn": 1280,
  "inception_next": 960,  # timm's head: 3 x the last stage's 320
  "maxvit_rmlp": 256,
  "pe_vit": 192,  # the attention-pooled vector
}


@nnx.jit
def _forward(encoder, images):
  return encoder(images)


@pytest.mark.parametrize("which", sorted(TINY))
def test_forward_shapes(which):
  config = dict(TINY[which], projector=dict(hidden_dim=32, out_dim=8))
  channels = config.get("in_channels", 3)
  images = jax.ShapeDtypeStruct((3, 32, 32, channels), jnp.float32)
  features, projections = jax.eval_shape(
    lambda x: models.build_encoder(config, models.make_rngs(0))(x), images
  )
  assert features.shape == (3, EXPECTED_DIMS[which]) and projections.shape == (3, 8)


@pytest.mark.slow
def test_resnet_stage_maps_split_the_block_chain_at_stage_ends():
  resnet = models.build_backbone(
    dict(name="resnet", variant="18", small_stem=True, width=8, in_channels=1), nnx.Rngs(0)
  )
  resnet.eval()
  images = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  maps = resnet.stage_maps(images)
  # Reference: the stem, then the 8 blocks one after another; stages end after blocks 2, 4, 6, 8.
  x = jax.nn.relu(resnet.stem_bn(resnet.stem(images)))
  ends = []
  for i, block in enumerate(resnet.blocks):
    x = block(x)
    if i % 2 == 1:
      ends.append(x)
  assert [m.shape for m in maps] == [(2, 28, 28, 8), (2, 14, 14, 16), (2, 7, 7, 32), (2, 4, 4, 64)]
  for got, want in zip(maps, ends):
    np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(resnet.feature_map(images), ends[-1], rtol=1e-6)


@pytest.mark.slow
def test_vit_and_convnext_stage_maps():
  vit = models.ViT("Ti6/16", img_size=32, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 48, 3))
  maps = vit.stage_maps(images)
  x, _ = vit._tokens(images)
  assert len(maps) == len(vit.blocks)
  for block, rate, got in zip(vit.blocks, vit.drop_rates, maps, strict=True):
    x = block(x, rate)
    np.testing.assert_allclose(got, vit.norm(x)[:, 1:].reshape(2, 2, 3, 192), rtol=1e-5, atol=1e-6)
  convnext = models.build_backbone(dict(name="convnextv2", variant="atto"), nnx.Rngs(0))
  shapes = [
    m.shape
    for m in jax.eval_shape(convnext.stage_maps, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  ]
  assert shapes == [(1, 16, 16, 40), (1, 8, 8, 80), (1, 4, 4, 160), (1, 2, 2, 320)]


def test_efficientnet_stage_maps_end_each_resolution():
  """One map per stride (4, 8, 16, 32): the last stage of each resolution, the head's at the end
  (timm's efficientnet_b0 feature maps: 24, 40, 112 and 320 channels; 1280 after the head)."""
  net = models.build_backbone(dict(name="efficientnet", variant="b0"), models.make_rngs(0))
  net.eval()  # BatchNorm statistics are not updated under eval_shape's trace
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  shapes = [m.shape for m in jax.eval_shape(net.stage_maps, images)]
  assert shapes == [(1, 16, 16, 24), (1, 8, 8, 40), (1, 4, 4, 112), (1, 2, 2, 1280)]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["vit", "vit_registers_no_cls", "resnet18_small"])
def test_forward_is_finite_and_embed_matches(which):
  config = dict(TINY[which], projector=dict(hidden_dim=32, out_dim=8))
  encoder = models.create_encoder(config)
  encoder.eval()
  assert encoder.feature_dim == EXPECTED_DIMS[which]
  images = jax.random.uniform(jax.random.key(0), (3, 32, 32, config.get("in_channels", 3)))
  features, _ = _forward(encoder, images)
  np.testing.assert_allclose(nnx.jit(lambda m, x: m.embed(x))(encoder, images), features, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(features)))


@pytest.mark.slow
def test_projector_structure_is_linear_bn_relu_twice_then_linear():
  projector = models.Projector(16, hidden_dim=32, out_dim=8, rngs=nnx.Rngs(0))
  assert [l.kernel.shape for l in projector.linears] == [(16, 32), (32, 32)]
  assert len(projector.norms) == 2 and projector.out.kernel.shape == (32, 8)
  x = jax.random.normal(jax.random.key(0), (4, 3, 16))  # [N, V, D]: BN over N and V together
  np.testing.assert_allclose(projector(x), projector(x.reshape(12, 16)).reshape(4, 3, 8), rtol=1e-6)


@pytest.mark.slow
def test_one_vit_takes_global_and_local_crops():
  vit = models.ViT("Ti6/16", img_size=64, rngs=nnx.Rngs(0))
  vit.eval()
  pooled_global, _ = vit(jnp.ones((2, 64, 64, 3)))
  pooled_local, _ = vit(jnp.ones((2, 32, 48, 3)))  # non-square local crop
  assert pooled_global.shape == pooled_local.shape == (2, 192)
  assert vit.patch_features(jnp.ones((1, 32, 48, 3))).shape == (1, 2, 3, 192)
  # At the native grid the stored embeddings are used as they are.
  np.testing.assert_array_equal(vit._position_embeddings(4, 4), vit.pos_embed[...])
  # Resizing a constant or linear field is exact for bicubic interpolation away from the borders.
  ramp = jnp.broadcast_to(jnp.arange(4.0)[:, None, None], (4, 4, 192)).reshape(1, 16, 192)
  vit.pos_embed.set_value(ramp)
  resized = np.asarray(vit._position_embeddings(8, 8)).reshape(8, 8, 192)
  assert np.allclose(resized[:, 0, 0], resized[:, 5, 7])  # constant along columns
  assert np.all(np.diff(resized[2:6, 0, 0]) > 0)  # increasing along rows
  vit.pos_embed.set_value(jnp.full((1, 16, 192), 0.7))
  np.testing.assert_allclose(vit._position_embeddings(6, 3), 0.7, rtol=1e-5)


@pytest.mark.slow
def test_vit_features_are_last_two_summary_tokens():
  vit = models.ViT("Ti6/16", img_size=32, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  pooled, features = vit(images)
  x, _ = vit._tokens(images)
  outputs = [x]
  for index in range(len(vit.blocks)):  # each block as the model runs it (one compiled call)
    outputs.append(vit._block(index, outputs[-1]))
  np.testing.assert_allclose(features[:, :192], vit.norm(outputs[-2])[:, 0], rtol=1e-5)
  np.testing.assert_allclose(features[:, 192:], vit.norm(outputs[-1])[:, 0], rtol=1e-5)
  np.testing.assert_allclose(pooled, features[:, 192:], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["vit", "resnet18_small", "convnextv2"])
def test_bfloat16_compute_keeps_float32_params(which):
  config = dict(TINY[which], projector=dict(hidden_dim=32, out_dim=8))
  channels = config.get("in_channels", 3)
  images = jax.random.uniform(jax.random.key(0), (4, 32, 32, channels))
  reference = models.create_encoder(config)
  # The same float32 arrays (what the same seed would draw), without compiling their initialiser
  # again: only the random streams are created.
  arrays = nnx.Any(nnx.Param, nnx.BatchStat)
  low = models.create_encoder(dict(config, dtype="bfloat16"), initialise=nnx.Not(arrays))
  nnx.update(low, nnx.state(reference, arrays))
  reference.eval(), low.eval()
  params = jax.tree.leaves(nnx.state(low, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)
  features, _ = _forward(low, images)
  assert features.dtype == jnp.bfloat16
  want, _ = _forward(reference, images)
  err = np.linalg.norm(np.asarray(features, np.float32) - want) / np.linalg.norm(want)
  assert err < 0.05


@pytest.mark.parametrize(
  "images,match",
  [
    (jnp.ones((2, 32, 32)), r"shape \[N, H, W, C\]"),
    (jnp.ones((2, 32, 32, 1)), "input channels"),
    (jnp.ones((2, 30, 32, 3)), "not divisible by the patch size 16"),
  ],
)
def test_vit_rejects_bad_images(images, match):
  vit = models.ViT("Ti6/16", img_size=32, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=match):
    vit(images)


def test_convnets_reject_bad_images():
  def call(config, shape):
    return jax.eval_shape(
      lambda x: models.build_backbone(config, models.make_rngs(0))(x),
      jax.ShapeDtypeStruct(shape, jnp.float32),
    )

  with pytest.raises(ValueError, match="input channels"):
    call(dict(name="resnet", variant="18"), (2, 32, 32, 1))
  with pytest.raises(ValueError, match=r"shape \[N, H, W, C\]"):
    call(dict(name="convnextv2", variant="atto"), (32, 32, 3))
  # Swin: sides must be multiples of its 4 px patches (maps then pad to whole windows)
  with pytest.raises(ValueError, match="not divisible by the patch size 4"):
    call(dict(name="swin", variant="mini", img_size=32), (2, 30, 30, 3))
  # LeViT: attention biases laid out for 32 px images
  with pytest.raises(ValueError, match="built for 32x32 images"):
    call(dict(name="levit", variant="mini", img_size=32), (2, 64, 64, 3))


@pytest.mark.parametrize(
  "config,match",
  [
    (dict(name="vitt", variant="S/16"), "Unknown model.name 'vitt'"),
    (dict(name="vit", variant="S/15"), "Unknown ViT variant 'S/15'"),
    (dict(name="vit", variant="S/16", small_stem=True), r"Unknown key\(s\) \['small_stem'\]"),
    (dict(name="resnet", variant="101"), "Unknown ResNet variant"),
    (dict(name="convnextv2", variant="giant"), "Unknown ConvNeXt-V2 variant"),
    (dict(name="resnet", variant="18", projector=dict(out=8)), r"model.projector"),
    (dict(name="resnet", variant="18", dtype="fp8"), "model.dtype"),
    (dict(name="resnet", variant="18", stem="deep", small_stem=True), "model.stem"),
    (dict(name="resnet", variant="18", stem="quad"), "model.stem"),
    (dict(name="swin", variant="huge"), "Unknown Swin variant"),
    (dict(name="levit", variant="128", img_size=200), "not a multiple of the stem's stride 16"),
  ],
)
def test_bad_model_configs_name_the_problem(config, match):
  with pytest.raises(ValueError, match=match):
    models.build_encoder(config, models.make_rngs(0))


@pytest.mark.parametrize(
  "size,stride,padding",
  [
    pytest.param(2, 1, ((1, 1), (1, 1)), marks=pytest.mark.slow),
    (2, 1, "SAME"),
    pytest.param(3, 2, ((1, 1), (1, 1)), marks=pytest.mark.slow),
    (1, 1, "SAME"),
  ],
)
def test_small_input_convolution_equals_xla_convolution(size, stride, padding):
  from lejepa_jax.models import layers

  x = jax.random.normal(jax.random.key(0), (4, size, size, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))
  numbers = ("NHWC", "HWIO", "NHWC")

  def ours(x, w):
    return layers.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=numbers)

  def xla(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=numbers)

  np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
  for g_ours, g_xla in zip(
    jax.grad(lambda *a: ours(*a).sum() ** 2, (0, 1))(x, w),
    jax.grad(lambda *a: xla(*a).sum() ** 2, (0, 1))(x, w),
  ):
    np.testing.assert_allclose(g_ours, g_xla, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_cpu_attention_equals_jax_dot_product_attention():
  from lejepa_jax.models import vit

  q, k, v = (jax.random.normal(jax.random.key(i), (2, 7, 3, 8)) for i in range(3))
  np.testing.assert_allclose(
    vit.attention(q, k, v), jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6
  )
  # An independent float64 NumPy transcription: softmax(q k^T / sqrt(d)) v per head.
  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  scores = np.einsum("nqhd,nkhd->nhqk", qn, kn) / np.sqrt(8)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(
    vit.attention(q, k, v), np.einsum("nhqk,nkhd->nqhd", weights, vn), rtol=1e-5, atol=1e-6
  )
  # The spelled-out softmax keeps the gradient: the row maximum's stopped gradient is exactly zero.
  loss = lambda f: lambda *qkv: jnp.sum(jnp.sin(f(*qkv)))
  got = jax.grad(loss(vit.attention), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_linear_layers_on_token_inputs_match_the_plain_product_and_its_gradient():
  from lejepa_jax.models import layers

  x = jax.random.normal(jax.random.key(0), (3, 5, 8))
  w = jax.random.normal(jax.random.key(1), (8, 4))
  numbers = (((2,), (0,)), ((), ()))
  want = np.einsum("ntk,km->ntm", np.asarray(x, np.float64), np.asarray(w, np.float64))
  np.testing.assert_allclose(layers.matrix_dot_general(x, w, numbers), want, rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, numbers)))
  got = jax.grad(loss(layers.matrix_dot_general), argnums=(0, 1))(x, w)
  plain = jax.grad(loss(jax.lax.dot_general), argnums=(0, 1))(x, w)
  for g, p in zip(got, plain):
    np.testing.assert_allclose(g, p, rtol=1e-5, atol=1e-5)
  with jax.set_mesh(
    jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
  ):
    dense = layers.dense(8, 4, (None, None), dtype=jnp.float32, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(dense(x), x @ dense.kernel[...] + dense.bias[...], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,n", [(6, 11), (11, 6)])  # both weight-gradient branches
def test_bfloat16_products_accumulate_in_float32_and_so_do_their_gradients(k, n):
  """accumulating_matmul against float64 NumPy on the same bfloat16-rounded operands: the only
  error allowed is the final rounding to bfloat16 (2^-8 relative), where a bfloat16 accumulation
  over 300 terms would be far off."""
  from lejepa_jax.models import cpu_kernels, layers

  m = 300
  a, b, g = (
    jax.random.normal(jax.random.key(i), shape).astype(jnp.bfloat16)
    for i, shape in enumerate([(m, k), (k, n), (m, n)])
  )
  a64, b64, g64 = (np.asarray(x, np.float64) for x in (a, b, g))
  out, pullback = jax.vjp(cpu_kernels.accumulating_matmul, a, b)
  grad_a, grad_b = pullback(g)
  for got, want in [(out, a64 @ b64), (grad_a, g64 @ b64.T), (grad_b, a64.T @ g64)]:
    assert got.dtype == jnp.bfloat16 and got.shape == want.shape
    np.testing.assert_allclose(
      np.asarray(got, np.float64), want, rtol=2**-8, atol=2**-8 * np.abs(want).max()
    )
  # The identity-product transpose behind the weight gradient is exact.
  np.testing.assert_array_equal(cpu_kernels._transposed(a), a.T)
  # Linear layers route bfloat16 token inputs through it (as one [300, k] matrix).
  x = a.reshape(3, 100, k)
  routed = lambda x, b: layers.matrix_dot_general(x, b, (((2,), (0,)), ((), ())))
  assert "accumulating_matmul" in str(jax.make_jaxpr(routed)(x, b))
  np.testing.assert_array_equal(routed(x, b).reshape(m, n), out)
  # The bias add: its gradient is the float32-accumulated sum of the output gradient's rows.
  bias = g[0]
  added, pullback = jax.vjp(layers.add_bias, out, bias)
  np.testing.assert_array_equal(added, out + bias)
  grad_y, grad_bias = pullback(g)
  np.testing.assert_array_equal(grad_y, g)
  assert grad_bias.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(grad_bias, np.float64), g64.sum(0), rtol=2**-8, atol=2**-8 * np.abs(g64.sum(0)).max()
  )


@pytest.mark.slow
@pytest.mark.parametrize("use_bias", [True, False])
def test_bfloat16_dense_equals_nnx_linear_also_under_vmap(use_bias):
  """layers.Dense (bfloat16 on the CPU: accumulating_matmul + add_bias) against nnx.Linear with the
  same parameters: outputs and parameter gradients, for one model and for stacked members under
  jax.vmap (as lejepa_jax.ablate trains them)."""
  from lejepa_jax.models import layers

  make = lambda cls, **kw: cls(
    6, 5, use_bias=use_bias, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0), **kw
  )
  ours = make(layers.Dense, dot_general=layers.matrix_dot_general)
  plain = make(nnx.Linear)
  x = jax.random.normal(jax.random.key(1), (4, 7, 6))

  def loss(module, params, x):
    graphdef, _ = nnx.split(module)
    y = nnx.merge(graphdef, params)(x).astype(jnp.float32)
    return jnp.sum(jnp.sin(y))

  params = nnx.state(ours, nnx.Param)
  for stacked in (False, True):
    args = (
      (jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params), jnp.stack([x, -x]))
      if stacked
      else (params, x)
    )
    run = lambda f: jax.vmap(f) if stacked else f
    got = run(jax.value_and_grad(lambda p, x: loss(ours, p, x)))(*args)
    want = run(jax.value_and_grad(lambda p, x: loss(plain, p, x)))(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert g.dtype == w.dtype
      np.testing.assert_allclose(
        np.asarray(g, np.float32),
        np.asarray(w, np.float32),
        rtol=0.02,
        atol=0.02 * float(np.abs(np.asarray(w)).max()),
      )


@pytest.mark.slow
def test_bfloat16_cpu_product_forms_are_as_accurate_as_plain_autodiff(monkeypatch):
  """The whole LeJEPA gradient of a bfloat16 ViT with the CPU product forms (accumulating_matmul,
  add_bias) against the same model differentiated by plain autodiff (forms switched off), both
  against float32: the forms' error is no larger than bfloat16's own."""
  from lejepa_jax import losses
  from lejepa_jax.models import layers

  config = dict(name="vit", variant="Mi/8", img_size=16, projector=dict(hidden_dim=32, out_dim=8))
  images = jax.random.uniform(jax.random.key(0), (16, 16, 16, 3))

  def gradient(dtype: str, forms: bool) -> np.ndarray:
    monkeypatch.setattr(layers, "_cpu_product_rewrites_apply", lambda: forms)
    encoder = models.create_encoder(dict(config, dtype=dtype))

    def loss(model):
      pooled, _ = model.backbone(images)
      z = model.projector(pooled.reshape(8, 2, -1))
      return losses.lejepa_loss(z, jax.random.key(1), num_global=2, sigreg_weight=0.05, num_slices=32)[0]

    grads = nnx.jit(lambda model: nnx.grad(loss)(model))(encoder)  # a new function: traced anew
    return np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in jax.tree.leaves(grads)])

  exact = gradient("float32", True)
  forms, plain = gradient("bfloat16", True), gradient("bfloat16", False)
  error = lambda g: np.linalg.norm(g - exact) / np.linalg.norm(exact)
  # Measured on the development CPU: 16.6% (plain) and 16.8% (forms) relative error.
  assert error(plain) < 0.5
  assert error(forms) < 1.1 * error(plain)
  np.testing.assert_allclose(np.linalg.norm(forms), np.linalg.norm(plain), rtol=0.01)


# family -> (config, image side, gradient tolerance relative to each tensor's largest entry): the
# ConvNeXt's GRN divides by norms summed over the whole map, which carries the float32 rounding of
# a recomputed forward pass further (measured: 1e-7 absolute on an entry of 2.4e-3, atto).
REMAT_MODELS = {
  "vit": (dict(name="vit", variant="Mi/8", img_size=16), 16, 1e-6),
  "convnextv2": (dict(name="convnextv2", variant="atto"), 32, 1e-5),
}


@pytest.mark.slow
@pytest.mark.parametrize(
  "family,remat",
  [("vit", "full"), ("vit", "dots_with_no_batch_dims_saveable"), ("convnextv2", "full")],
)
def test_remat_changes_memory_not_values(family, remat):
  """Rematerialised blocks give the same outputs and gradients, drop-path masks included."""
  config, side, grad_tolerance = REMAT_MODELS[family]
  images = jax.random.uniform(jax.random.key(1), (4, side, side, 3))

  def loss_and_grads(policy):
    backbone = models.build_backbone(
      dict(config, drop_path=0.5, remat=policy, dtype="float32"), nnx.Rngs(0)
    )
    graphdef, state = nnx.split(backbone)

    def loss(model):
      pooled, features = model(images)
      return jnp.sum(pooled**2) + jnp.sum(jnp.sin(features))

    def run(state):  # as the train step does: merge inside the trace, then differentiate
      return nnx.value_and_grad(loss)(nnx.merge(graphdef, state))

    return jax.jit(run)(state), str(jax.make_jaxpr(run)(state))

  (want, want_grads), plain_jaxpr = loss_and_grads("none")
  (got, got_grads), remat_jaxpr = loss_and_grads(remat)
  assert "remat" in remat_jaxpr and "remat" not in plain_jaxpr  # jax.checkpoint's primitive
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
    # Recomputation may round differently in float32: tolerance relative to each tensor's scale.
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=grad_tolerance * float(np.abs(w).max()))
  with pytest.raises(ValueError, match="model.remat"):
    models.build_backbone(dict(config, remat="some"), nnx.Rngs(0))


def test_drop_path_draws_flaxs_dropout_masks_with_the_rate_given_at_call():
  """layers.DropPath against nnx.Dropout broadcast over every non-batch axis, on the same stream:
  the same masks with the rate a Python float (eager) or a traced scalar (jit), in float32 and
  bfloat16, and the same rescaled values (to rounding: XLA may divide by a traced scalar through
  its reciprocal); whole samples dropped; the identity in evaluation and at rate 0."""
  from lejepa_jax.models import layers

  x = jax.random.normal(jax.random.key(0), (64, 3, 5))
  through_jit = nnx.jit(lambda path, x, rate: path(x, rate))
  for dtype in (jnp.float32, jnp.bfloat16):
    inputs = x.astype(dtype)
    for rate in (0.1, 0.45):
      ours = layers.DropPath(rate, rngs=nnx.Rngs(3))
      flaxs = nnx.Dropout(rate, broadcast_dims=(1, 2), rngs=nnx.Rngs(3))
      # The state a checkpoint holds: the same paths and keys as nnx.Dropout's.
      saved = [nnx.to_pure_dict(nnx.state(m)) for m in (ours.dropout, flaxs)]
      assert jax.tree.structure(saved[0]) == jax.tree.structure(saved[1])
      for a, b in zip(_key_bits(saved[0]), _key_bits(saved[1]), strict=True):
        np.testing.assert_array_equal(a, b)
      got = [ours(inputs, rate), through_jit(ours, inputs, rate)]  # the second: counter advanced
      assert all(g.dtype == dtype for g in got)
      for g, want in zip(got, [flaxs(inputs), flaxs(inputs)], strict=True):
        g, want = np.asarray(g, np.float32), np.asarray(want, np.float32)
        np.testing.assert_array_equal(g == 0, want == 0)  # the inputs hold no zeros
        np.testing.assert_allclose(g, want, rtol=1e-6 if dtype == jnp.float32 else 1e-2)
        dropped = np.all(g == 0, axis=(1, 2))
        assert 0 < dropped.sum() < 64  # whole samples: each row all zeros or all kept
        kept = np.asarray(inputs[~dropped], np.float32)
        np.testing.assert_allclose(g[~dropped], kept / (1 - rate), rtol=1e-2)
      ours.eval()
      assert ours(inputs, rate) is inputs
  assert layers.DropPath(0.0, rngs=nnx.Rngs(0)).dropout is None
  assert layers.DropPath(0.0, rngs=nnx.Rngs(0))(x, 0.0) is x
  for rate in (1.0, -0.1):
    with pytest.raises(ValueError, match=r"drop_path rates must be in \[0, 1\)"):
      layers.DropPath(rate, rngs=nnx.Rngs(0))


def test_blocks_of_one_graph_are_traced_once_with_each_blocks_values(monkeypatch):
  """A ViT's blocks differ only in their drop-path rates: its forward and backward trace the block
  twice (block 0, at rate 0, has no random stream), not once per block, and give the outputs and
  gradients of calling each block in turn, drop-path masks included. Tracing again for per-member
  convolutions (ablations) traces the blocks again rather than reusing the other trace; inside
  `each_block_traced` every block is traced."""
  from lejepa_jax.models import layers, members, vit

  calls = []
  block_call = vit.Block.__call__
  monkeypatch.setattr(vit.Block, "__call__", lambda *a: calls.append(1) or block_call(*a))
  model = models.ViT("Ti6/8", img_size=16, drop_path=0.3, rngs=models.make_rngs(0))
  graphdef, state = nnx.split(model)
  images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))

  def each_block_in_turn(model, images):
    x, _ = model._tokens(images)
    for block, rate in zip(model.blocks, model.drop_rates, strict=True):
      x = block(x, rate)
    return model._summary(x)

  def loss_and_grads(forward, state):
    loss = lambda model: jnp.sum(forward(model, images) ** 2)
    return nnx.value_and_grad(loss)(nnx.merge(graphdef, state))

  layers._traced_once_per_graph.clear_cache()
  want = jax.jit(functools.partial(loss_and_grads, each_block_in_turn))(state)
  assert len(calls) == 6
  calls.clear()
  shared = jax.jit(functools.partial(loss_and_grads, lambda model, x: model(x)[0]))
  got = shared(state)
  assert len(calls) == 2
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  calls.clear()
  anew = jax.jit(functools.partial(loss_and_grads, lambda model, x: model(x)[0]))
  with members.per_member_convolutions():  # a new trace of the step, inside the setting
    anew.lower(state)
  assert len(calls) == 2
  calls.clear()
  with layers.each_block_traced():  # the benchmark's baseline
    jax.jit(functools.partial(loss_and_grads, lambda model, x: model(x)[0])).lower(state)
  assert len(calls) == 6
  # What a call writes reaches the model: each block's drop-path counter advances by its two draws
  # (one per residual branch). In evaluation nothing is written, so a closure over the model traces.
  counters = lambda m: [int(b.drop_path.dropout.rngs.count[...]) for b in m.blocks[1:]]
  trained = nnx.clone(model)
  nnx.jit(lambda m, x: m(x))(trained, images)
  assert counters(trained) == [c + 2 for c in counters(model)]
  model.eval()
  assert jax.jit(lambda x: model(x)[0])(images).shape == (4, 192)


def _key_bits(tree):
  """Every leaf as a NumPy array, random keys as their raw bits."""
  bits = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  return [np.asarray(bits(leaf)) for leaf in jax.tree.leaves(tree)]


def test_make_rngs_draws_flaxs_keys_and_builds_the_same_model():
  """models.make_rngs against nnx.Rngs itself: the same keys drawn eagerly, under jit and from forked
  streams; a drop-path ViT built from each has the same parameters, streams and outputs."""
  ours, flax_s = models.make_rngs(7), nnx.Rngs(7)
  draws = lambda rngs: [rngs.params(), rngs.dropout(), rngs.default.fork()(), rngs()]
  for a, b in zip(_key_bits(draws(ours)), _key_bits(draws(flax_s)), strict=True):
    np.testing.assert_array_equal(a, b)
  forked = models.make_rngs(0).default.fork()
  assert type(forked) is type(ours.default) is not nnx.RngStream

  @nnx.jit
  def three_keys(rngs):
    return jnp.stack([jax.random.key_data(rngs.params()) for _ in range(3)])

  np.testing.assert_array_equal(three_keys(ours), three_keys(flax_s))
  np.testing.assert_array_equal(ours.default.count[...], flax_s.default.count[...])
  images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))
  built = [
    models.ViT("Mi/8", img_size=16, drop_path=0.5, rngs=r) for r in (models.make_rngs(0), nnx.Rngs(0))
  ]
  for a, b in zip(_key_bits(nnx.state(built[0])), _key_bits(nnx.state(built[1])), strict=True):
    np.testing.assert_array_equal(a, b)
  forward = nnx.jit(lambda model, x: model(x))
  for _ in range(2):  # the second call draws the drop-path masks from the advanced counters
    for a, b in zip(_key_bits(forward(built[0], images)), _key_bits(forward(built[1], images))):
      np.testing.assert_array_equal(a, b)


@pytest.fixture
def origin_searches(monkeypatch) -> list:
  """Grows by one item each time JAX searches the equations traced so far for a tracer's origin
  (`find_progenitors`, what its AttributeError messages do)."""
  from jax._src.interpreters import partial_eval

  searches = []
  original = partial_eval.JaxprStackFrame.find_progenitors
  monkeypatch.setattr(
    partial_eval.JaxprStackFrame,
    "find_progenitors",
    lambda self, tracer: searches.append(1) or original(self, tracer),
  )
  return searches


def test_make_rngs_traces_without_searching_the_trace_per_key(origin_searches):
  """The reason models.make_rngs exists: flax's stream update asks each traced counter for its
  sharding, and JAX answers with an error whose message searches every equation traced so far
  (find_progenitors), once per key. If this fails for nnx.Rngs, flax no longer does; make_rngs can go."""
  from lejepa_jax.models import layers

  searches = origin_searches
  layers._traced_once_per_graph.clear_cache()  # blocks traced by earlier tests would be reused
  # The backbone alone: the projector's BatchNorm updates its statistics the same indexed way.
  config = dict(name="vit", variant="Mi/8", img_size=16, drop_path=0.5)
  images = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  for rngs, expect_searches in ((nnx.Rngs, True), (models.make_rngs, False)):
    searches.clear()
    jax.eval_shape(lambda x: models.build_backbone(config, rngs(0))(x), images)
    assert bool(searches) == expect_searches, (rngs, len(searches))


def test_batch_norm_updates_its_statistics_as_flaxs_without_searching_the_trace(origin_searches):
  """layers.batch_norm against nnx.BatchNorm with the same settings: the same outputs and running
  statistics, bit for bit, under jit in training mode; and tracing its update asks JAX for no
  tracer's origin (find_progenitors, see layers.RunningStat), where flax's own does."""
  from lejepa_jax.models import layers

  searches = origin_searches
  x = jax.random.normal(jax.random.key(0), (6, 3, 3, 5)) * 2 + 1
  with nnx.use_eager_sharding(False):  # lone layers, outside any mesh
    ours = layers.batch_norm(5, dtype=jnp.float32, rngs=nnx.Rngs(0))
    flaxs = nnx.BatchNorm(5, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
  step = nnx.jit(lambda norm, x: norm(x, use_running_average=False))
  results = []
  for norm, expect_searches in ((flaxs, True), (ours, False)):
    searches.clear()
    out = step(norm, x)
    assert bool(searches) == expect_searches, (type(norm.mean), len(searches))
    results.append([np.asarray(a) for a in (out, norm.mean[...], norm.var[...])])
  for got, want in zip(results[1], results[0]):
    np.testing.assert_array_equal(got, want)
  assert not np.allclose(results[1][1], 0)  # the statistics moved


def test_a_second_encoder_of_one_config_and_seed_reuses_the_initialiser_not_the_arrays():
  config = {"name": "vit", "variant": "Mi/8", "img_size": 16, "in_channels": 3}
  params = lambda encoder: jax.tree.leaves(nnx.state(encoder, nnx.Param))
  first = models.create_encoder(config, seed=3)
  with helpers.TraceCounter() as traced:
    again = models.create_encoder(dict(config), seed=3)
  assert traced.count == 0
  for x, y in zip(params(first), params(again), strict=True):
    np.testing.assert_array_equal(x, y)
    assert x.unsafe_buffer_pointer() != y.unsafe_buffer_pointer()
  # Another seed or another config is another initialiser, and its own parameters.
  with helpers.TraceCounter() as traced:
    other_seed = models.create_encoder(config, seed=4)
    other_config = models.create_encoder(dict(config, variant="Mi/4"), seed=3)  # patch 4: other shapes
  assert traced.count >= 2
  assert any(not np.array_equal(a, b) for a, b in zip(params(first), params(other_seed), strict=True))
  assert [x.shape for x in params(other_config)] != [x.shape for x in params(first)]


def test_blur_pool_is_the_reflect_padded_binomial_filter_at_stride_2():
  """layers.blur_pool against a float64 NumPy loop: reflect padding by 1, the [1, 2, 1] x [1, 2, 1]
  / 16 filter per channel, every second row and column (odd sides round up)."""
  from lejepa_jax.models import layers

  x = np.random.default_rng(0).normal(size=(2, 7, 6, 3))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  taps = np.outer([1, 2, 1], [1, 2, 1]) / 16
  want = np.zeros((2, 4, 3, 3))
  for i in range(4):
    for j in range(3):
      window = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
      want[:, i, j] = np.einsum("nhwc,hw->nc", window, taps)
  got = layers.blur_pool(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_simple_norm_divides_by_the_unbiased_deviation_without_centring():
  from lejepa_jax.models import layers

  x = np.random.default_rng(1).normal(loc=2.0, size=(3, 5, 8))
  with nnx.use_eager_sharding(False):  # a lone layer, outside any mesh
    norm = layers.simple_norm(8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  norm.scale.set_value(jnp.arange(1.0, 9.0))
  want = x / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + 1e-6) * np.arange(1.0, 9.0)
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x, jnp.float32))), want, rtol=1e-5)


def test_pe_rotary_embedding_rotates_each_channel_pair_by_its_grid_angle():
  """pe_vit's RoPE against complex rotation in float64: channel pair k of a token at row i, column
  j of an h x w grid is multiplied by exp(1j * angle), where the angle is x * f_k for the first
  head_dim / 4 pairs and y * f_(k - head_dim / 4) for the rest; x = (j + 1) * 24 / w,
  y = (i + 1) * 24 / h, f_k = 10000^(-4k / head_dim). Rotations keep each pair's norm."""
  from lejepa_jax.models import pe_vit

  h, w, dim = 3, 5, 16
  q = np.random.default_rng(2).normal(size=(2, h * w, 4, dim))  # [N, T, heads, Dh]
  bands = dim // 4
  want = np.empty_like(q)
  for i in range(h):
    for j in range(w):
      for k in range(2 * bands):
        position = (j + 1) * 24 / w if k < bands else (i + 1) * 24 / h
        angle = position * 10000.0 ** (-(k % bands) / bands)
        pair = q[:, i * w + j, :, 2 * k] + 1j * q[:, i * w + j, :, 2 * k + 1]
        rotated = pair * np.exp(1j * angle)
        want[:, i * w + j, :, 2 * k], want[:, i * w + j, :, 2 * k + 1] = rotated.real, rotated.imag
  sin, cos = pe_vit.rope_sin_cos(h, w, dim)
  got = np.asarray(pe_vit.apply_rope(jnp.asarray(q, jnp.float32), jnp.asarray(sin), jnp.asarray(cos)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
