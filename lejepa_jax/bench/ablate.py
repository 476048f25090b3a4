"""Batched ablation against sequential runs: N members as one vmapped program vs N separate runs.

With `--end_to_end` it times the commands instead (`lejepa_jax/bench/ablate_end_to_end.py`): N
`python -m lejepa_jax.main` processes against one `python -m lejepa_jax.ablate` on the prepared
Fashion-MNIST (`--data_dir`), `--measured_steps` each, extended to `--run_steps`; `--steps` and
`--member_convolutions` do not apply there (the ablation uses the config's `member_convolutions`).
Otherwise (below) it times the programs in this process:

Members: a lambda sweep on the default CPU config (configs/fashion_mnist.py, optionally with another
batch size). Both sides use the real steps, compiled ahead of time: the vmapped members step of
`lejepa_jax.ablate` and `steps.compile_train_step` once per member (a separate run compiles its own
program). Each side is timed as set-up (state initialisation + compilation) and per step (median of
`--steps` steps after one warm-up step, all members), on synthetic uint8 batches (data loading,
shared by the members in an ablation, is not included).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags
from flax import nnx

from lejepa_jax import cli
from lejepa_jax.ablation import stacked, sweep_plan
from lejepa_jax.bench import ablate_end_to_end, common
from lejepa_jax.bench.train import default_cpu_config
from lejepa_jax.models import members as members_lib
from lejepa_jax.scale import compiler, sharding
from lejepa_jax.training import steps, train_state

LAMBDAS = ("0.0", "0.01", "0.02", "0.05", "0.1", "0.2", "0.3", "0.5")


def _check_strategies(names: list[str]) -> bool:
  allowed = ("auto", *members_lib.STRATEGIES)
  if not names or any(name not in allowed for name in names):
    raise flags.ValidationError(f"the strategies are {', '.join(allowed)}")
  return True


_PROG = "python -m lejepa_jax.bench ablate"
_FLAGS = flags.FlagValues()  # this benchmark's own flags (`lejepa_jax.cli`)
_MEMBERS = flags.DEFINE_integer("members", 8, f"first N of lambda {LAMBDAS}", flag_values=_FLAGS)
_RECIPE = flags.DEFINE_string(
  "recipe",
  "default",
  "configs/fashion_mnist.py recipe (e.g. vit: a ViT without convolutions)",
  flag_values=_FLAGS,
)
_BATCH = flags.DEFINE_integer("batch", None, "global batch (default: config's)", flag_values=_FLAGS)
_WIDTH = flags.DEFINE_integer(
  "width",
  None,
  "ResNet width (default: config's); small widths show per-op overhead",
  flag_values=_FLAGS,
)
_VARIANT = flags.DEFINE_string(
  "variant",
  None,
  "model variant (default: config's), e.g. Mi/7 with --recipe vit: a ViT of width 64 and depth 2",
  flag_values=_FLAGS,
)
_STEPS = flags.DEFINE_integer("steps", 3, "timed steps per side", flag_values=_FLAGS)
_RUN_STEPS = flags.DEFINE_integer(
  "run_steps",
  None,
  "steps of the end-to-end estimate (default: the config's total_steps)",
  flag_values=_FLAGS,
)
_END_TO_END = flags.DEFINE_bool(
  "end_to_end",
  False,
  "time the commands instead: N `lejepa_jax.main` processes against one `lejepa_jax.ablate` "
  "on the prepared data (bench/ablate_end_to_end.py)",
  flag_values=_FLAGS,
)
_MEASURED_STEPS = flags.DEFINE_integer(
  "measured_steps",
  100,
  "--end_to_end: steps each side really trains",
  lower_bound=2,
  flag_values=_FLAGS,
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir",
  "data/tfds",
  "--end_to_end: the prepared Fashion-MNIST (relative to the current directory)",
  flag_values=_FLAGS,
)
_MEMBER_CONVOLUTIONS = flags.DEFINE_list(
  "member_convolutions",
  ["per_member", "grouped"],
  "comma-separated strategies of the vmapped side (models/members.py)",
  flag_values=_FLAGS,
)
_CONVOLUTIONS = flags.DEFINE_bool(
  "convolutions", False, "only time ways of running members' convolutions (a table)", flag_values=_FLAGS
)
flags.register_validator("member_convolutions", _check_strategies, flag_values=_FLAGS)


def synthetic_batch(config, mesh) -> dict[str, jax.Array]:
  """A global batch of random uint8 views and zero labels, laid out as training lays them out."""
  spec = steps.abstract_batch(config, mesh, config.data.global_batch_size)
  rng = np.random.default_rng(0)
  return {
    k: jax.device_put(
      rng.integers(0, 255, s.shape).astype(s.dtype) if k != "label" else np.zeros(s.shape, np.int32),
      s.sharding,
    )
    for k, s in spec.items()
  }


def time_vmapped(config, lambdas, timed_steps: int, member_convolutions: str) -> dict[str, float]:
  """Set-up and step seconds of the members as one program (ablate's vmapped step), with the
  members' convolutions run as `member_convolutions` says ("per_member" or "grouped")."""
  config = config.copy_and_resolve_references()
  config.member_convolutions = member_convolutions
  start = time.perf_counter()
  (group,) = sweep_plan.plan_sweep(config, [("loss.sigreg_weight", list(lambdas))])
  mesh = stacked.make_mesh(config, 1)
  graphdef, state = stacked.init_stacked_state(config, [m.config.seed for m in group.members], mesh)
  hparams = stacked.stacked_hparams(group.members, mesh)
  compiled = stacked.compile_members_step(config, mesh, graphdef, state, hparams)
  jax.block_until_ready(state)
  setup = time.perf_counter() - start
  batch, holder = synthetic_batch(config, mesh), {"state": state}

  def step():
    with jax.set_mesh(mesh):
      holder["state"], metrics = compiled(holder["state"], hparams, batch, np.int32(1))
    jax.block_until_ready(metrics)

  return {"setup": setup, "step": common.median_seconds(step, timed_steps)}


def time_sequential(config, lambdas, timed_steps: int) -> dict[str, float]:
  """Set-up and step seconds summed over one separately compiled run per member."""
  totals = {"setup": 0.0, "step": 0.0}
  for member in sweep_plan.plan_sweep(config, [("loss.sigreg_weight", list(lambdas))])[0].members:
    c = member.config
    start = time.perf_counter()
    mesh = sharding.make_mesh(dict(c.mesh.axes), c.mesh.axis_type)
    graphdef, state = nnx.split(
      sharding.create_sharded(lambda: train_state.build_train_objects(c), mesh)
    )
    compiled = steps.compile_train_step(c, mesh, graphdef, state, c.data.global_batch_size)
    jax.block_until_ready(state)
    totals["setup"] += time.perf_counter() - start
    batch, holder = synthetic_batch(c, mesh), {"state": state}

    def step():
      with jax.set_mesh(mesh):
        holder["state"], metrics = compiled(holder["state"], batch, jax.random.key(0))
      jax.block_until_ready(metrics)

    totals["step"] += common.median_seconds(step, timed_steps)
    print(f"  sequential: {member.name} done", flush=True)
  return totals


def member_convolution_table(
  shapes=(
    (4, 16, 128, 28),
    (4, 16, 128, 14),
    (4, 32, 128, 14),
    (4, 64, 128, 7),
    (8, 16, 128, 28),
    (4, 4, 32, 28),
  ),
) -> str:
  """Forward + backward of one 3x3 convolution per member, four ways, for (members, channels,
  batch, size) shapes: each member's own convolution, jax.vmap's grouped convolution, one dense
  convolution with a block-diagonal kernel over members x channels, and one grouped convolution
  on members x channels (median ms of 5 after a warm-up, the project's compiler options)."""
  dn = ("NHWC", "HWIO", "NHWC")

  def conv(x, w, groups=1):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=groups
    )

  def forward_backward(fn):
    return jax.grad(lambda x, w: jax.numpy.sum(jax.numpy.sin(fn(x, w))), argnums=(0, 1))

  def ms(fn, *args) -> float:
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=compiler.options("auto"))
    return 1e3 * common.median_seconds(lambda: jax.block_until_ready(compiled(*args)), 5)

  rows = []
  for m, c, n, h in shapes:
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.normal(size=(m, n, h, h, c)), jax.numpy.float32)
    w = jax.numpy.asarray(rng.normal(size=(m, 3, 3, c, c)), jax.numpy.float32)
    wide_x = jax.numpy.moveaxis(x, 0, 3).reshape(n, h, h, m * c)
    dense = np.zeros((3, 3, m * c, m * c), np.float32)
    for i in range(m):
      dense[:, :, i * c : (i + 1) * c, i * c : (i + 1) * c] = np.asarray(w[i])
    stacked = jax.numpy.concatenate(list(w), -1)  # [3, 3, c, m * c]: one group per member
    per_member = ms(lambda x, w: [forward_backward(conv)(x[i], w[i]) for i in range(m)], x, w)
    rows.append(
      [
        f"{m} x ({n}, {h}, {h}, {c})",
        f"{per_member:.1f}",
        f"{ms(jax.vmap(forward_backward(conv)), x, w):.1f}",
        f"{ms(forward_backward(conv), wide_x, jax.numpy.asarray(dense)):.1f}",
        f"{ms(forward_backward(lambda a, b: conv(a, b, m)), wide_x, stacked):.1f}",
      ]
    )
  return common.markdown_table(
    [
      "members x (batch, H, W, channels)",
      "per member ms",
      "vmap (grouped) ms",
      "block-diagonal dense ms",
      "grouped on members x channels ms",
    ],
    rows,
  )


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  if _CONVOLUTIONS.value:
    print(f"# members' convolutions ({common.machine_description()})")
    print(member_convolution_table())
    return
  config = default_cpu_config(_RECIPE.value)
  overrides = {
    k: v
    for k, v in (
      ("data.global_batch_size", _BATCH.value),
      ("model.width", _WIDTH.value),
      ("model.variant", _VARIANT.value),
    )
    if v
  }
  config.update_from_flattened_dict(overrides)
  lambdas = LAMBDAS[: _MEMBERS.value]
  run_steps = _RUN_STEPS.value or config.total_steps
  print(f"# batched ablation ({common.machine_description()})", flush=True)
  print(
    f"  {len(lambdas)} members (lambda {', '.join(lambdas)}), configs/fashion_mnist.py:"
    f"recipe={_RECIPE.value}, {config.model.name} {config.model.get('variant', '')} width "
    f"{config.model.get('width', '-')}, batch {config.data.global_batch_size}",
    flush=True,
  )
  if _END_TO_END.value:
    if run_steps < _MEASURED_STEPS.value:
      raise SystemExit(f"--run_steps ({run_steps}) must be at least --measured_steps.")
    table = ablate_end_to_end.run(
      _RECIPE.value,
      lambdas,
      _MEASURED_STEPS.value,
      run_steps,
      config.log_every,
      _DATA_DIR.value,
      overrides,
    )
    print(table)
    return
  sides = {}
  for strategy in _MEMBER_CONVOLUTIONS.value:
    sides[f"one vmapped program, {strategy} convolutions"] = time_vmapped(
      config, lambdas, _STEPS.value, strategy
    )
    print(f"  vmapped ({strategy}) done", flush=True)
  sequential = time_sequential(config, lambdas, _STEPS.value)
  print(results_table(sides, sequential, len(lambdas), _STEPS.value + 1, run_steps))


def results_table(sides: dict[str, dict], sequential: dict, members: int, short: int, long: int) -> str:
  """Markdown rows per vmapped side and the sequential runs, each vmapped side with its speed-up
  (sequential / vmapped: set-up, step, `short` and `long` steps end to end)."""
  total = lambda r, n: r["setup"] + n * r["step"]
  rows = [
    [
      f"{members} sequential runs",
      f"{sequential['setup']:.0f}",
      f"{sequential['step']:.2f}",
      f"{total(sequential, short):.0f}",
      f"{total(sequential, long):.0f}",
      "1.00x",
    ]
  ]
  for name, r in sides.items():
    rows.append(
      [
        f"{members} members, {name}",
        f"{r['setup']:.0f}",
        f"{r['step']:.2f}",
        f"{total(r, short):.0f}",
        f"{total(r, long):.0f}",
        f"{sequential['setup'] / r['setup']:.2f}x set-up, "
        f"{sequential['step'] / r['step']:.2f}x step, "
        f"{total(sequential, long) / total(r, long):.2f}x end to end",
      ]
    )
  return common.markdown_table(
    [
      "",
      "set-up s (init + compile)",
      "s/step (all members)",
      f"s for {short} steps",
      f"s for {long} steps (estimate)",
      "speed-up over sequential",
    ],
    rows,
  )
