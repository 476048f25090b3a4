r"""The embedded default: LeJEPA on Fashion-MNIST, sized for a 2-core CPU.

    python -m lejepa_jax.main --config=configs/fashion_mnist.py --workdir=workdirs/fashion_mnist

`--config=configs/fashion_mnist.py:runlocal` shrinks it to a run of about a minute; any field can be
overridden, e.g. `--config.loss.sigreg_weight=0.1`.
"""

import ml_collections


def parse_arg(arg: str | None, **defaults):
  """'runlocal,steps=100' -> {"runlocal": True, "steps": "100"} over the given defaults."""
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    out[key] = value if value else True
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Sized for about 20 minutes on 2 CPU cores (ResNet-18 at 28 px runs ~8 s per step there).
  c.total_steps = 150
  c.log_every = 10
  c.checkpoint_every = 50

  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist"
  c.data.split = "train"
  c.data.eval_split = "test"
  c.data.data_dir = "data/tfds"
  c.data.channels = 1
  c.data.global_batch_size = 128
  c.data.num_workers = 0
  c.data.global_views = dict(count=2, size=28, scale=(0.25, 1.0))
  c.data.local_views = dict(count=2, size=14, scale=(0.05, 0.25))
  c.data.augment = dict(color_jitter=0.8, brightness=0.4, contrast=0.4, blur=0.0, solarize=0.2,
                        grayscale=0.0)
  c.data.augment_on_device = False
  c.data.mean = (0.286,)
  c.data.std = (0.353,)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet"
  c.model.variant = "18"
  c.model.small_stem = True
  c.model.in_channels = 1
  c.model.dtype = "auto"
  c.model.projector = dict(hidden_dim=512, out_dim=64, num_layers=3)

  c.loss = ml_collections.ConfigDict()
  c.loss.sigreg_weight = 0.05
  c.loss.num_slices = 1024
  c.loss.t_max = 3.0
  c.loss.num_knots = 17
  c.loss.combine = "convex"
  c.loss.sigreg_views = "per_view"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-3
  c.optim.weight_decay = 5e-4
  c.optim.warmup_steps = 15
  c.optim.final_lr_fraction = 1e-3
  c.optim.probe_lr = 1e-3
  c.optim.probe_weight_decay = 1e-6

  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = dict(data=-1)
  c.mesh.axis_type = "auto"

  c.probe = ml_collections.ConfigDict()
  c.probe.num_classes = 10

  if args["runlocal"]:
    c.total_steps = int(args.get("steps", 30))
    c.log_every = 5
    c.checkpoint_every = 10
    c.data.global_batch_size = 32
    c.model.projector = dict(hidden_dim=64, out_dim=16, num_layers=3)
    c.loss.num_slices = 128
  return c
