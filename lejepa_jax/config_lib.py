"""Shared pieces of the experiment configs (configs/): the full default tree, argument parsing, runlocal.

Every config file defines `get_config(arg)`; `arg` is the text after ':' in `--config=file.py:arg`, a
comma-separated list such as `runlocal` or `variant=B/16,runlocal,steps=50`. Each config names the
arguments it accepts (`parse_arg`); any other name, or a value of the wrong type, is an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=path:arg` would give it (without locking)."""
  import importlib.util
  import os

  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"lejepa_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# The arguments every training config accepts (see `finish`); steps=0 means runlocal's own length.
RUNLOCAL_ARGS = dict(runlocal=False, steps=0)
RUNLOCAL_STEPS = 30
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_arg(arg: str | None, **defaults) -> dict:
  """'runlocal,variant=L/14' -> {"runlocal": True, "variant": "L/14"} over the given defaults.

  The defaults name every argument the config accepts; any other name is an error. A value takes its
  default's type (bool: a bare name, or =true/false/1/0/yes/no), so a typo never passes silently.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = (part.strip() for part in item.partition("="))
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r} (in ':{arg}'); {_accepted(defaults)}.")
    out[key] = _convert(key, value if sep else None, defaults[key])
  return out


def _accepted(defaults: dict) -> str:
  if not defaults:
    return "this config accepts no arguments"
  return "accepted, with their defaults: " + ", ".join(f"{k}={v}" for k, v in defaults.items())


def parse_value(text: str, like: Any) -> Any:
  """`text` as a value of `like`'s type: a boolean (true/false, 1/0, yes/no), int, float or str;
  the text itself when `like` is None. Raises ValueError saying what was expected. Config
  arguments (`--config=file:key=value`) and ablation sweeps (`--sweep=key=v1,v2`) both read
  values with it."""
  if isinstance(like, bool):
    if text.lower() in _TRUE + _FALSE:
      return text.lower() in _TRUE
    raise ValueError(f"{text!r} is not a boolean (true/false, 1/0, yes/no)")
  if like is None:
    return text
  if not isinstance(like, (int, float, str)):
    raise ValueError(
      f"only numbers, booleans and strings can be set from text, not a {type(like).__name__}"
    )
  try:
    return type(like)(text)
  except ValueError:
    raise ValueError(f"{text!r} is not a {type(like).__name__}") from None


def _convert(key: str, value: str | None, default):
  """`value` (None for a bare name: True for a boolean) as the type of `default`."""
  if value is None:
    if isinstance(default, bool):
      return True
    raise ValueError(f"Config argument {key!r} needs a value: {key}=... (default {default}).")
  try:
    return parse_value(value, default)
  except ValueError as e:
    raise ValueError(f"Config argument {key}={value!r}: {e} (default {default}).") from None


# The options each backbone reads from config.model (lejepa_jax.models.BACKBONES), at the models'
# own defaults. A config holds all of its family's, so `--config.model.<option>=...` reaches each.
MODEL_OPTIONS = {
  # remat (ViT, ConvNeXt-V2): activation rematerialisation per block (models.layers.REMAT_POLICIES);
  # `lejepa_jax.plan` tells which one fits a given accelerator and mesh.
  "vit": dict(
    img_size=224, in_channels=3, class_token=True, num_registers=0, drop_path=0.0, remat="none"
  ),
  "resnet": dict(in_channels=3, small_stem=False, stem="plain", avg_down=False, blur=False, width=64),
  "convnextv2": dict(in_channels=3, drop_path=0.0, remat="none", stem="patch", norm="layer"),
  "convnext": dict(in_channels=3, drop_path=0.0, remat="none", stem="patch", norm="layer"),
  "resnext": dict(in_channels=3),
  "swin": dict(img_size=224, in_channels=3, drop_path=0.0),
  "levit": dict(img_size=224, in_channels=3, drop_path=0.0),
  "efficientnet": dict(in_channels=3, norm="batch", group_size=1, drop_path=0.0),
  "inception_next": dict(in_channels=3, drop_path=0.0),
  "maxvit": dict(img_size=224, rel_pos="bias", in_channels=3, drop_path=0.0),
  "pe_vit": dict(img_size=224, in_channels=3, drop_path=0.0),
}


def model_config(
  name: str, variant: str, projector: dict | None = None, **options
) -> ml_collections.ConfigDict:
  """config.model of a `name` backbone: all its options (MODEL_OPTIONS), `options` over defaults."""
  unknown = sorted(set(options) - set(MODEL_OPTIONS[name]))
  if unknown:
    raise ValueError(f"{name} has no option(s) {unknown}; its options: {sorted(MODEL_OPTIONS[name])}.")
  projector = projector or dict(hidden_dim=2048, out_dim=512, num_layers=3)
  return ml_collections.ConfigDict(
    dict(
      name=name, variant=variant, dtype="auto", **{**MODEL_OPTIONS[name], **options}, projector=projector
    )
  )


def base_config() -> ml_collections.ConfigDict:
  """Every key a config can set, defaulting to the paper's ImageNet recipe (docs/method.md, Recipes)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 100_000
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.grad_accum_steps = 1
  # XLA options per backend (lejepa_jax/scale/compiler.py): 'auto', 'none' or 'auto;name=value;...'.
  c.compiler_options = "auto"
  # Ablations: how vmapped members' convolutions run (lejepa_jax/models/members.py): 'auto',
  # 'per_member' or 'grouped'.
  c.member_convolutions = "auto"

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012"
  c.data.split = "train"
  c.data.eval_split = "validation"
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.channels = 3
  c.data.global_batch_size = 512
  c.data.num_workers = 8
  c.data.global_views = dict(count=2, size=224, scale=(0.3, 1.0))
  c.data.local_views = dict(count=6, size=96, scale=(0.05, 0.3))
  c.data.augment = dict(
    flip=0.5,
    color_jitter=0.8,
    brightness=0.4,
    contrast=0.4,
    saturation=0.2,
    hue=0.1,
    grayscale=0.2,
    blur=0.5,
    solarize=0.2,
  )
  c.data.augment_on_device = False
  c.data.mean = (0.485, 0.456, 0.406)  # ImageNet statistics
  c.data.std = (0.229, 0.224, 0.225)
  # Evaluation views: the short side resized to size / fraction, then a central crop of `size`
  # (0.875: the usual ImageNet protocol, 224 px out of 256). Only evaluation reads it.
  c.data.eval_crop_fraction = 0.875
  # A record that cannot be read or decoded stops training and evaluation with an error naming its
  # file and index; True logs, counts and leaves such records out instead.
  c.data.skip_bad_records = False

  # The model section holds every option of its family (MODEL_OPTIONS): a config of another family
  # replaces it with `model_config(name, ...)`.
  c.model = model_config("vit", "L/14", drop_path=0.1)

  c.loss = ml_collections.ConfigDict()
  c.loss.sigreg_weight = 0.05
  c.loss.num_slices = 1024
  c.loss.t_max = 3.0
  c.loss.num_knots = 17
  c.loss.combine = "convex"
  c.loss.sigreg_views = "per_view"
  # SIGReg's univariate test: losses.normality.TESTS, "<name>@official" at the authors' scales.
  c.loss.test = "epps_pulley"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-4
  c.optim.weight_decay = 5e-2
  c.optim.warmup_steps = 10 * 2502  # 10 epochs of ImageNet-1k at batch 512
  c.optim.final_lr_fraction = 1e-3
  c.optim.clip_grad_norm = 0.0  # > 0: clip the encoder's gradients to this global norm first
  c.optim.probe_lr = 1e-3
  c.optim.probe_weight_decay = 1e-6

  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = dict(data=-1, fsdp=1)
  c.mesh.axis_type = "auto"
  # Granules (TPU slices; else processes) along each axis, for multislice runs: data=2 on two slices
  # makes the data axis 2 x axes["data"] with only its collectives crossing the slower network.
  c.mesh.dcn_axes = dict(data=1)

  c.probe = ml_collections.ConfigDict()
  c.probe.num_classes = 1000
  return c


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training set the configs know: where its records are and the sizes the schedule and probe need.

  tfds_name: the TFDS name `data.name` reads (TFDS's own builder, or an image folder prepared under
  that name); train_examples: images per epoch of `train_split` (the schedule's epochs); prepare:
  how to make it readable offline, printed in docs and errors.
  """

  tfds_name: str
  train_examples: int
  num_classes: int
  eval_split: str = "test"
  train_split: str = "train"
  prepare: str = "TFDS: `tfds build {name} --file_format=array_record --data_dir=DATA_DIR`"


_FOLDER = (
  "image folder: `python -m lejepa_jax.prepare folder --name={name} --source=DIR "
  "--out=DATA_DIR` (DIR/train/<class>/*.jpg, DIR/{split}/<class>/*.jpg)"
)
# Known training sets; the schedule's epochs and the probe need both sizes. Image counts are the
# TFDS split sizes, or the paper's (Table 5's header) where it names no public split.
DATASETS = {
  "imagenet2012": Dataset("imagenet2012", 1_281_167, 1000, "validation"),
  "imagenette": Dataset("imagenette", 9_469, 10, "validation"),
  "cifar10": Dataset("cifar10", 50_000, 10),
  "cifar100": Dataset("cifar100", 50_000, 100),
  "flowers102": Dataset("oxford_flowers102", 1_020, 102),
  "food101": Dataset("food101", 75_750, 101, "validation"),
  "dtd": Dataset("dtd", 1_880, 47),
  "cars": Dataset("cars196", 8_144, 196),
  "pets": Dataset("oxford_iiit_pet", 3_680, 37),
  # Not in TFDS: prepared from an image folder (the preparation command names the layout).
  "aircraft": Dataset("fgvc_aircraft", 6_667, 100, prepare=_FOLDER),
  "galaxy10": Dataset("galaxy10_decals", 11_008, 10, prepare=_FOLDER),
  "imagenet10": Dataset("imagenet10", 13_000, 10, "validation", prepare=_FOLDER),
  "imagenet100": Dataset("imagenet100", 126_689, 100, "validation", prepare=_FOLDER),
}
IMAGENET_TRAIN_EXAMPLES = DATASETS["imagenet2012"].train_examples


def dataset(name: str) -> Dataset:
  """The known dataset `name` (a key of DATASETS); an unknown one is an error listing them."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; known: {sorted(DATASETS)}.")
  return DATASETS[name]


def preparation(name: str) -> str:
  """How to make dataset `name` readable offline (its TFDS build or image-folder preparation)."""
  d = dataset(name)
  return d.prepare.format(name=d.tfds_name, split=d.eval_split)


def set_dataset(c: ml_collections.ConfigDict, name: str) -> Dataset:
  """Points the config's data and probe at the known dataset `name`; returns it for the schedule."""
  d = dataset(name)
  c.data.name, c.data.split, c.data.eval_split = d.tfds_name, d.train_split, d.eval_split
  c.probe.num_classes = d.num_classes
  return d


def imagenet_vit_config(arg: str | None, variant: str, fsdp: int) -> ml_collections.ConfigDict:
  """The paper's ImageNet-1k ViT recipe; `arg` may set variant=..., epochs=..., runlocal, steps=..."""
  args = parse_arg(arg, variant=variant, epochs=100.0, **RUNLOCAL_ARGS)
  c = base_config()
  c.model.variant = args["variant"]
  set_schedule(c, args["epochs"], IMAGENET_TRAIN_EXAMPLES)
  if args["variant"].endswith("/14"):
    c.data.local_views = dict(c.data.local_views, size=98)  # a multiple of the patch
  c.mesh.axes = dict(data=-1, fsdp=fsdp)
  return finish(c, args)


def set_schedule(
  c: ml_collections.ConfigDict, epochs: float, num_examples: int, warmup_epochs: float = 10
) -> None:
  """total_steps and warmup_steps from epochs over a training set of `num_examples`."""
  c.total_steps = epochs_to_steps(epochs, num_examples, c.data.global_batch_size)
  c.optim.warmup_steps = epochs_to_steps(warmup_epochs, num_examples, c.data.global_batch_size)


def finish(c: ml_collections.ConfigDict, args: dict) -> ml_collections.ConfigDict:
  """Applies `runlocal` (and `steps=`, the length of that run) from the parsed config arguments."""
  if args["steps"] < 0 or (args["steps"] and not args["runlocal"]):
    # steps= sets runlocal's length only: a full run's length follows from its epochs (or
    # --config.total_steps, which leaves the warmup and checkpoint cadence as the recipe has them).
    raise ValueError(
      f"Config argument steps={args['steps']} needs runlocal (runlocal,steps=N with "
      "N >= 1); for a full-size run use epochs= or --config.total_steps=N."
    )
  if args["runlocal"]:
    apply_runlocal(c, args["steps"] or RUNLOCAL_STEPS)
  return c


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
  return max(1, round(epochs * num_examples / batch_size))


def apply_runlocal(
  c: ml_collections.ConfigDict, steps: int = RUNLOCAL_STEPS
) -> ml_collections.ConfigDict:
  """Shrinks any config to a CPU run of about a minute: tiny model of the same family, small crops,
  small batch, few steps. The dataset stays the one the config names."""
  c.total_steps = steps
  c.log_every = 5
  c.checkpoint_every = 10
  c.optim.warmup_steps = 5
  c.data.global_batch_size = 32
  c.data.num_workers = 0
  c.mesh.axes = dict(data=-1)
  small = {
    "vit": dict(variant="Mi/8", img_size=32),
    "resnet": dict(variant="18", small_stem=True, stem="plain", width=16),
    "convnextv2": dict(variant="atto"),
    "convnext": dict(variant="atto"),
    "resnext": dict(),  # its sizes (26ts, 32ts, 33ts) are 8-20M parameters, fast at 32 px
    "swin": dict(variant="mini", img_size=32),
    "levit": dict(variant="mini", img_size=32),
    "efficientnet": dict(variant="b0"),  # its only size: 4M parameters
    "inception_next": dict(variant="atto"),
    "maxvit": dict(variant="pico"),
    "pe_vit": dict(variant="Mi/8", img_size=32),
  }[c.model.name]
  for key, value in small.items():
    c.model[key] = value
  if c.model.name in ("vit", "pe_vit"):
    c.model.drop_path = 0.0
  sizes = (
    (32, 16)
    if c.data.global_views["size"] > 32
    else (c.data.global_views["size"], c.data.local_views["size"])
  )
  # At most 2 global views (ConvNet recipes take all 4-8 views global): the run stays a minute long.
  c.data.global_views = dict(
    c.data.global_views, size=sizes[0], count=min(2, c.data.global_views["count"])
  )
  c.data.local_views = dict(c.data.local_views, size=sizes[1], count=min(2, c.data.local_views["count"]))
  if c.model.name in ("swin", "levit", "maxvit"):  # laid out for one image size: the views'
    c.model.img_size = sizes[0]
  c.model.projector = dict(hidden_dim=64, out_dim=16, num_layers=3)
  c.loss.num_slices = 128
  return c


# The fine-tuning evaluator's options and their defaults (lejepa_jax/evaluation/finetune.py: the
# recipe they set).
FINETUNE_OPTIONS = dict(
  epochs=2.0,
  batch_size=128,
  lr=1e-3,
  weight_decay=0.05,
  layer_decay=0.75,
  warmup_fraction=0.1,
  label_smoothing=0.1,
  crop_scale=(0.35, 1.0),
  seed=0,
  min_steps=0,  # at least this many steps (k-shot runs: a few examples make few steps an epoch)
  shots=(),  # k-shot runs after the full one: k training examples per class (Table 3)
  seeds=3,  # draws of the k examples per k, each with its own fine-tuning seed
)


def probe_config() -> ml_collections.ConfigDict:
  """Every key an evaluation (probe) config can set (configs/probe/*.py), with the defaults."""
  c = ml_collections.ConfigDict()
  c.name = "default"  # results and the record of evaluated steps are kept per probe config name
  # "embed": what the encoder's probe head reads (ViT: CLS of the last two blocks concatenated;
  # ConvNets: the pooled final map); "feature_map": the unpooled final map / patch tokens, flattened.
  c.features = "embed"
  # With "feature_map": how many final stages (ConvNets) or blocks (ViTs) to read, each map
  # flattened, concatenated (2 mirrors the paper's last-two-blocks protocol on unpooled maps).
  c.feature_stages = 1
  c.train_examples = 0  # 0: the whole training split; N: its first N examples
  c.eval_examples = 0  # 0: the whole evaluation split
  c.batch_size = 256
  c.evaluators = "linear,knn,fewshot,label_free,pictures"
  c.baselines = ""  # any of "pixels,random_init": evaluated once, next to the checkpoints
  c.linear = dict(epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-6)
  c.knn = dict(k=20, temperature=0.07)
  c.fewshot = dict(shots=(1, 5, 10), seeds=5, ridge=1e-2)
  # The linear protocol on k examples per class (the paper's k-shot columns), `seeds` draws each.
  c.linear_shots = dict(
    shots=(1, 10), seeds=3, min_steps=300, epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-6
  )
  # Transfer: probe a known dataset (DATASETS) instead of the run's own, e.g. "dtd" ("": the run's);
  # data_dir: where it is prepared ("": the run's data.data_dir).
  c.dataset = ""
  c.data_dir = ""
  c.label_free = dict(num_slices=1024, max_examples=10000)
  c.pictures = dict(num_images=8, num_points=2000)
  # "finetune" (not in the default list): the whole encoder + a linear head
  # (lejepa_jax/evaluation/finetune.py).
  c.finetune = dict(FINETUNE_OPTIONS)
  c.poll_seconds = 30.0  # --follow: how often to look for new checkpoints
  c.idle_timeout = 7200.0  # --follow: give up after this long without a new checkpoint
  return c
