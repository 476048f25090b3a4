"""Building blocks shared by the encoders: layers annotated with logical axis names, drop-path, checks.

Every parameter carries logical axis names in its `out_sharding` metadata ("embed", "mlp", "heads",
"conv_in", "conv_out", "norm", ...). `lejepa_jax.scale.sharding` maps them to mesh axes with rules from
the config, so one model definition serves data parallel, FSDP and tensor parallel layouts.

XLA CPU kernel workarounds (bfloat16 products with float32 accumulation, im2col for kernels larger
than their feature map, per-member convolutions under vmap) live in `lejepa_jax.models.cpu_kernels`,
the CPU-only ones switched on by backend in `cpu_kernels.use_cpu_kernels`; the layers here call them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import cpu_kernels, members
from lejepa_jax.models.cpu_kernels import LOW_PRECISION, add_bias, conv_general_dilated

Dtype = Any
TRUNC_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)


def lazily_sharded(init):
  """Decorates a module's __init__ so its variables are created unsharded, wherever it is built.

  The logical axis names stay in each variable's metadata; `lejepa_jax.scale.sharding.create_sharded`
  lays the variables out on a mesh (inside one jit), so building a model never needs a mesh in scope.
  """

  @functools.wraps(init)
  def wrapper(*args, **kwargs):
    with nnx.use_eager_sharding(False):
      init(*args, **kwargs)

  return wrapper


# The one backend switch for the CPU kernels (`cpu_kernels.use_cpu_kernels`), looked up here at call
# time so that tests can switch the CPU forms off by patching it.
_cpu_product_rewrites_apply = cpu_kernels.use_cpu_kernels


def matrix_dot_general(
  lhs: jax.Array,
  rhs: jax.Array,
  dimension_numbers,
  precision=None,
  preferred_element_type=None,
  out_sharding=None,
) -> jax.Array:
  """`lax.dot_general` for Linear layers; where the CPU kernels apply,
  `cpu_kernels.dot_general_as_matrix_product` (one 2-D product, float32 accumulation)."""
  kwargs = dict(
    precision=precision, preferred_element_type=preferred_element_type, out_sharding=out_sharding
  )
  if _cpu_product_rewrites_apply():
    return cpu_kernels.dot_general_as_matrix_product(lhs, rhs, dimension_numbers, **kwargs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)


class Dense(nnx.Linear):
  """`nnx.Linear` (same parameters) whose bias add, in bfloat16/float16 where the CPU kernels apply,
  is `cpu_kernels.add_bias`."""

  def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
    low_precision = self.dtype is not None and jnp.dtype(self.dtype) in LOW_PRECISION
    if (
      self.bias is None
      or out_sharding is not None
      or self.preferred_element_type is not None
      or not low_precision
      or not _cpu_product_rewrites_apply()
    ):
      return super().__call__(inputs, out_sharding)
    inputs, kernel, bias = self.promote_dtype(
      (inputs, self.kernel[...], self.bias[...]), dtype=self.dtype
    )
    y = self.dot_general(
      inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision
    )
    return add_bias(y, bias)


def dense(
  in_features: int,
  out_features: int,
  axes: tuple[str | None, str | None],
  *,
  dtype: Dtype,
  rngs: nnx.Rngs,
  use_bias: bool = True,
  kernel_init=TRUNC_NORMAL,
) -> Dense:
  """A Linear layer whose kernel [in, out] carries logical axes `axes` (bias: `axes[1]`)."""
  return Dense(
    in_features,
    out_features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=kernel_init,
    kernel_metadata={"out_sharding": axes},
    bias_metadata={"out_sharding": (axes[1],)},
    dot_general=matrix_dot_general,
    rngs=rngs,
  )


def conv(
  in_features: int,
  out_features: int,
  kernel_size: int | tuple[int, int],
  *,
  strides: int = 1,
  padding: str | Sequence[tuple[int, int]] = "SAME",
  groups: int = 1,
  use_bias: bool = False,
  dtype: Dtype,
  rngs: nnx.Rngs,
  kernel_init=None,
) -> nnx.Conv:
  """A 2-D NHWC convolution with kernel [kh, kw, in/groups, out] on logical axes (conv_in, conv_out);
  an int kernel_size is square."""
  kernel_init = kernel_init or nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
  kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
  return nnx.Conv(
    in_features,
    out_features,
    kernel,
    strides=strides,
    padding=padding,
    feature_group_count=groups,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=kernel_init,
    conv_general_dilated=conv_general_dilated,
    kernel_metadata={"out_sharding": (None, None, "conv_in", "conv_out")},
    bias_metadata={"out_sharding": ("conv_out",)},
    rngs=rngs,
  )


def layer_norm(features: int, *, dtype: Dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.LayerNorm:
  return nnx.LayerNorm(
    features,
    epsilon=epsilon,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_metadata={"out_sharding": ("norm",)},
    bias_metadata={"out_sharding": ("norm",)},
    rngs=rngs,
  )


def rms_norm(features: int, *, dtype: Dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.RMSNorm:
  """x / sqrt(mean(x^2) + eps) * scale over the last axis (no bias)."""
  return nnx.RMSNorm(
    features,
    epsilon=epsilon,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_metadata={"out_sharding": ("norm",)},
    rngs=rngs,
  )


class SimpleNorm(nnx.Module):
  """timm's SimpleNorm: x / sqrt(var(x) + eps) * scale over the last axis, with the unbiased
  variance (torch.var's default) and neither the mean subtracted nor a bias added."""

  def __init__(self, features: int, *, dtype: Dtype, epsilon: float = 1e-6):
    self.scale = nnx.Param(jnp.ones((features,)), out_sharding=("norm",))
    self.dtype, self.epsilon = dtype, epsilon

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)  # the variance of bfloat16 activations in float32
    variance = jnp.var(x32, axis=-1, keepdims=True, ddof=1)
    return (x32 * jax.lax.rsqrt(variance + self.epsilon) * self.scale[...]).astype(self.dtype)


def simple_norm(features: int, *, dtype: Dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> SimpleNorm:
  del rngs  # initialised to ones
  return SimpleNorm(features, dtype=dtype, epsilon=epsilon)


class RunningStat(nnx.BatchStat):
  """A BatchNorm running statistic whose whole-array update `stat[...] = new` replaces the value.

  flax 0.12.8's `Variable.__setitem__` first compares the new value's `sharding` with the old one's;
  a tracer has none, and the AttributeError JAX raises for it describes where the tracer came from
  by searching every equation traced so far (as for `models.rngs.RngStream`'s counter). Two updates
  per BatchNorm make tracing a train step quadratic in the network's depth: tracing resnext26ts's
  runlocal step spent 1.6 of its 10 s there. The stored values are the same.
  """

  def __setitem__(self, key, value) -> None:
    if key is Ellipsis:
      self.set_value(value)
    else:
      super().__setitem__(key, value)


def batch_norm(
  features: int, *, dtype: Dtype, rngs: nnx.Rngs, zero_scale: bool = False
) -> nnx.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5), its running
  statistics :class:`RunningStat`s.

  Under a batch-sharded `jax.jit` its statistics are those of the global batch: the mean over the
  sharded axis becomes a cross-device reduction, never a silent per-device estimate.
  """
  norm = nnx.BatchNorm(
    features,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
    scale_metadata={"out_sharding": ("norm",)},
    bias_metadata={"out_sharding": ("norm",)},
    rngs=rngs,
  )
  norm.mean, norm.var = RunningStat(norm.mean.get_value()), RunningStat(norm.var.get_value())
  return norm


# Activation rematerialisation of each block (ViT, ConvNeXt-V2): what the forward pass keeps for the
# backward pass. "none" keeps every activation; "full" keeps only each block's input and recomputes
# the rest; "dots_with_no_batch_dims_saveable" also keeps the outputs of the weight matmuls
# (recomputing attention scores, softmax, GELU, norms); "dots_saveable" keeps every matmul output.
REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat(remat: str) -> None:
  if remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat must be one of {list(REMAT_POLICIES)}, got {remat!r}.")


def remat_call(block: nnx.Module, x: jax.Array, remat: str, *args: Any) -> jax.Array:
  """`block(x, *args)`, its activations rematerialised per the policy `remat` (REMAT_POLICIES): what
  the policy does not keep, the backward pass recomputes.

  The call is a nested `jax.jit` keyed by the block's graph (its structure and static attributes),
  so the blocks of a network that share one graph are traced, differentiated and lowered once, not
  once per block; XLA inlines the calls. Per-block values (e.g. drop-path rates) go in `args`,
  traced, to keep the graphs equal. Measured on the 2-core development CPU (`python -m
  lejepa_jax.bench lower`): ViT-g/14's train step lowered for GPUs and TPUs in 5.0 s instead of 14.7
  (StableHLO 0.67 instead of 1.41 MB); a ViT's loss unchanged and its gradients within 4e-7 of each
  tensor's scale (float32 rounding of a differently arranged program).
  """
  if not _ONE_TRACE_PER_GRAPH.get():
    return _call(block, x, remat, args)
  graphdef, state = nnx.split(block)
  y, written = _traced_once_per_graph(
    graphdef.with_no_outer_index(), state, x, args, remat, _trace_settings()
  )
  nnx.update(block, written)
  return y


def _trace_settings() -> tuple[bool, bool]:
  """What the layers read at trace time outside JAX's own context (which jax.jit's cache keys on
  already: the mesh, the backend, config flags): per-member convolutions (ablations) and the CPU
  product forms. Part of the nested jit's key: a block traced under one setting is never reused
  under another."""
  return members.enabled(), bool(_cpu_product_rewrites_apply())


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _traced_once_per_graph(graphdef, state, x, args, remat: str, settings: tuple[bool, bool]):
  """(the block's output, the variables other than parameters that the call wrote: random-stream
  counters in training, none in evaluation, so that an unchanged block is left untouched)."""
  del settings  # a cache key only
  block = nnx.merge(graphdef, state)
  other = nnx.Not(nnx.Param)
  before = {path: v.get_value() for path, v in nnx.to_flat_state(nnx.state(block, other))}
  y = _call(block, x, remat, args)
  after = nnx.to_flat_state(nnx.state(block, other))
  written = [(path, v) for path, v in after if v.get_value() is not before[path]]
  return y, nnx.from_flat_state(written)


def _call(block: nnx.Module, x: jax.Array, remat: str, args: tuple) -> jax.Array:
  if remat == "none":
    return block(x, *args)
  return nnx.remat(type(block).__call__, policy=REMAT_POLICIES[remat])(block, x, *args)


_ONE_TRACE_PER_GRAPH = contextvars.ContextVar("one_trace_per_block_graph", default=True)


@contextlib.contextmanager
def each_block_traced() -> Iterator[None]:
  """Inside this, `remat_call` traces every block on its own, as before blocks of one graph shared
  a trace: the baseline of `python -m lejepa_jax.bench lower`. Trace anew inside it (a new
  `jax.jit`, or after `jax.clear_caches()`): a program traced outside is reused as it is."""
  token = _ONE_TRACE_PER_GRAPH.set(False)
  try:
    yield
  finally:
    _ONE_TRACE_PER_GRAPH.reset(token)


class ConvBN(nnx.Module):
  """A bias-free convolution (symmetric padding kernel_size // 2, as PyTorch's usual), BatchNorm,
  then `act` (None: none). `zero_scale` starts the BatchNorm scale at zero (a residual branch's
  last layer)."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    *,
    strides: int = 1,
    groups: int = 1,
    act=None,
    zero_scale: bool = False,
    dtype: Dtype,
    rngs: nnx.Rngs,
  ):
    pad = kernel_size // 2
    self.conv = conv(
      in_ch, out_ch, kernel_size, strides=strides, padding=((pad, pad), (pad, pad)), groups=groups,
      dtype=dtype, rngs=rngs,
    )  # fmt: skip
    self.bn = batch_norm(out_ch, dtype=dtype, rngs=rngs, zero_scale=zero_scale)
    self.act = act

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bn(self.conv(x))
    return y if self.act is None else self.act(y)


def blur_pool(x: jax.Array) -> jax.Array:
  """timm's BlurPool2d (anti-aliased downsampling, Zhang 2019): [N, H, W, C] -> [N, ceil(H / 2),
  ceil(W / 2), C], each channel reflect-padded by 1 and filtered with the binomial [1, 2, 1] x
  [1, 2, 1] / 16 at stride 2."""
  taps = jnp.array([1.0, 2.0, 1.0]) / 4
  channels = x.shape[-1]
  kernel = jnp.tile((taps[:, None] * taps[None, :])[:, :, None, None], (1, 1, 1, channels))
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  return jax.lax.conv_general_dilated(
    x,
    kernel.astype(x.dtype),
    window_strides=(2, 2),
    padding="VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
  )


class DropPath(nnx.Module):
  """Stochastic depth: drops a residual branch for whole samples, rescaling the kept ones by
  1 / (1 - rate). The same masks as `nnx.Dropout(rate, broadcast_dims=<every non-batch axis>)` on
  the same random stream, with the rate given at each call rather than held: blocks that differ
  only in their rate then have equal graphs, which `remat_call` traces once.

  Args:
    rate: the rate the path is built for; a positive rate gives it a random stream (state
      `dropout.rngs`), zero none (the path is then the identity).
  """

  def __init__(self, rate: float, *, rngs: nnx.Rngs):
    if not 0 <= rate < 1:  # at 1 every sample would be dropped and the rescale divide by zero
      raise ValueError(f"model.drop_path rates must be in [0, 1), got {rate}.")
    self.dropout = _MaskStream(rngs) if rate > 0 else None

  def __call__(self, x: jax.Array, rate: float | jax.Array) -> jax.Array:
    """x [N, ...] -> x with each sample's branch dropped with probability `rate` (a Python float or
    a traced scalar) in training; x unchanged in evaluation (`Module.eval()`)."""
    stream = self.dropout
    if stream is None or stream.deterministic:
      return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(stream.rngs(), p=keep, shape=shape, out_sharding=jax.typeof(x).sharding)
    kept = x / jnp.asarray(keep, x.dtype)
    return jax.lax.select(jnp.broadcast_to(mask, x.shape), kept, jnp.zeros_like(x))


class _MaskStream(nnx.Module):
  """A drop-path mask's random stream, held as `nnx.Dropout` holds it (the same state paths and
  keys, so checkpoints of either form restore into the other), and the `deterministic` switch that
  `Module.eval()` / `.train()` set."""

  def __init__(self, rngs: nnx.Rngs):
    self.rngs = rngs["dropout"].fork()
    self.deterministic = False


def drop_path_rates(total_rate: float, num_blocks: int) -> list[float]:
  """Linearly increasing drop-path rates over the blocks, from 0 to `total_rate`."""
  if num_blocks == 1:
    return [total_rate]
  return [total_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def check_images(images: jax.Array, in_channels: int, model: str, multiple_of: int = 1) -> None:
  """Raises ValueError unless `images` is [N, H, W, in_channels] with H, W multiples of `multiple_of`."""
  if images.ndim != 4:
    raise ValueError(f"{model} expects images of shape [N, H, W, C], got shape {images.shape}.")
  if images.shape[-1] != in_channels:
    raise ValueError(
      f"{model} was built for {in_channels} input channels, got images with "
      f"{images.shape[-1]} (shape {images.shape}); set model.in_channels."
    )
  height, width = images.shape[1:3]
  if height % multiple_of or width % multiple_of:
    raise ValueError(
      f"{model}: image size {height}x{width} is not divisible by the patch size "
      f"{multiple_of}; use crops whose sides are multiples of {multiple_of}."
    )


class PooledConvNet(nnx.Module):
  """Shared interface of the backbones that pool a final map (the ConvNets, Swin, LeViT): subclasses
  define `stage_maps(images)` -> the output map of every stage, [[N, H_s, W_s, C_s], ...], and set
  `out_dim` (the last stage's channels).

  `__call__` returns (pooled, features), both `pool(feature_map(images))` [N, out_dim]: the
  projector and the probes read the same globally pooled features.
  """

  out_dim: int

  @property
  def feature_dim(self) -> int:
    return self.out_dim

  @property
  def pooled_dim(self) -> int:
    return self.out_dim

  def feature_map(self, images: jax.Array) -> jax.Array:
    """images [N, H, W, C] -> the final stage's map [N, H', W', out_dim]."""
    return self.stage_maps(images)[-1]

  def pool(self, feature_map: jax.Array) -> jax.Array:
    """Global average over space: [N, H, W, C] -> [N, C]."""
    return jnp.mean(feature_map, axis=(1, 2))

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    pooled = self.pool(self.feature_map(images))
    return pooled, pooled

  def patch_features(self, images: jax.Array) -> jax.Array:
    """The final feature map [N, H', W', out_dim] (for PCA pictures)."""
    return self.feature_map(images)
