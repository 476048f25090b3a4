"""Every experiment config loads, names only known keys, and builds its model (abstractly)."""

import glob
import importlib.util
import inspect
import os

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from lejepa_jax import config_lib, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  glob.glob(os.path.join(ROOT, "configs", "*.py"))
  + glob.glob(os.path.join(ROOT, "configs", "paper", "*.py"))
)


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_builds_its_encoder(path, arg):
  module = load(path)
  assert module.__doc__.strip().splitlines()[0]
  # The command to run this very file: the training job, or the batched ablation for sweep configs.
  name = os.path.relpath(path, ROOT)
  assert any(
    f"python -m lejepa_jax.{job} --config={name}" in module.__doc__ for job in ("main", "ablate")
  )
  config = module.get_config(arg)
  reference = config_lib.base_config()
  for section in ("data", "loss", "optim", "mesh", "probe"):
    assert set(config[section]) <= set(reference[section]), (section, set(config[section]))
  features, projections = jax.eval_shape(
    lambda x: models.build_encoder(config.model.to_dict(), models.make_rngs(0))(x),
    jax.ShapeDtypeStruct(
      (2, config.data.global_views["size"], config.data.global_views["size"], config.data.channels),
      jax.numpy.float32,
    ),
  )
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


def parse_command_line(*args):
  """The config as `python -m lejepa_jax.main <args>` parses it (locked, with the overrides)."""
  argv = ["main", *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


def config_path(name):
  return os.path.join(ROOT, "configs", name)


def test_boolean_arguments_are_parsed_not_truthy():
  get_config = load(config_path("fashion_mnist.py")).get_config
  default, small = get_config().to_dict(), get_config("runlocal").to_dict()
  assert default != small
  for off in ("runlocal=false", "runlocal=0", "runlocal=No"):
    assert get_config(off).to_dict() == default, off
  assert get_config("runlocal=true").to_dict() == get_config("runlocal=1").to_dict() == small
  with pytest.raises(ValueError, match=r"runlocal='maybe'.*not a boolean"):
    get_config("runlocal=maybe")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_names_its_accepted_arguments(path):
  get_config = load(path).get_config
  with pytest.raises(ValueError, match=r"Unknown config argument 'runloca'.*runlocal=False"):
    get_config("runloca")
  # steps= is the length of a runlocal run: alone it would be ignored, so it is an error.
  with pytest.raises(ValueError, match="needs runlocal"):
    get_config("steps=7")
  assert get_config("runlocal,steps=7").total_steps == 7


def test_typed_arguments():
  get_config = load(config_path("vit_s.py")).get_config
  half, full = get_config("epochs=0.5"), get_config("epochs=1")
  assert 0 < half.total_steps < full.total_steps
  with pytest.raises(ValueError, match=r"epochs='many'.*float"):
    get_config("epochs=many")
  with pytest.raises(ValueError, match="'variant' needs a value"):
    get_config("variant")


def test_probe_configs_reject_arguments_they_do_not_use():
  with pytest.raises(ValueError, match=r"'fast'.*accepts no arguments"):
    load(config_path("probe/default.py")).get_config("fast")
  probe = load(config_path("probe/fashion_mnist.py")).get_config
  with pytest.raises(ValueError, match=r"'runlocal'.*fast=False"):
    probe("runlocal")
  assert probe("fast").train_examples > 0 and probe("fast=false").to_dict() == probe().to_dict()


def test_model_options_are_the_models_own():
  """config_lib.MODEL_OPTIONS names exactly what each backbone reads, at the backbone's defaults."""
  for name, (cls, keys) in models.BACKBONES.items():
    signature = inspect.signature(cls.__init__).parameters
    assert config_lib.MODEL_OPTIONS[name] == {k: signature[k].default for k in keys}, name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_model_option_is_settable_from_the_command_line(path):
  config = parse_command_line(f"--config={path}")
  options = config_lib.MODEL_OPTIONS[config.model.name]
  assert set(options) <= set(config.model)
  # Each option, set on the command line to a value unlike its default, reaches the config.
  other = {
    bool: lambda v: not v,
    int: lambda v: v + 1,
    float: lambda v: v + 0.25,
    str: lambda v: "full" if v != "full" else "none",
  }
  overrides = {key: other[type(value)](value) for key, value in options.items()}
  config = parse_command_line(
    f"--config={path}",
    *(f"--config.model.{key}={str(value).lower()}" for key, value in overrides.items()),
  )
  assert {key: config.model[key] for key in overrides} == overrides


def test_vit_options_are_rejected_by_convnet_configs():
  with pytest.raises(AttributeError, match="remat"):
    parse_command_line(f"--config={config_path('resnet50.py')}", "--config.model.remat=full")


def test_resnet50_knows_its_datasets():
  get_config = load(config_path("resnet50.py")).get_config
  with pytest.raises(ValueError, match=r"'imagenet_typo'.*imagenette.*probe\.num_classes"):
    get_config("dataset=imagenet_typo")
  imagenet, nette = get_config(), get_config("dataset=imagenette")
  assert nette.data.name == "imagenette"
  assert nette.probe.num_classes == 10 < imagenet.probe.num_classes  # Imagenette: 10 ImageNet classes
  # An epoch is Imagenette's training set, as configs/imagenette.py counts it (not ImageNet's).
  reference = load(config_path("imagenette.py")).get_config("epochs=100")
  nette = get_config("dataset=imagenette,epochs=100")
  examples = [c.total_steps * c.data.global_batch_size / 100 for c in (nette, reference)]
  assert examples[0] == pytest.approx(examples[1], rel=0.01)
  assert nette.probe.num_classes == reference.probe.num_classes


def test_fashion_mnist_recipes_are_rows_of_the_sweep_over_the_default():
  module = load(config_path("fashion_mnist.py"))
  default = module.get_config().to_dict()
  for name in module.RECIPES:
    config = module.get_config(f"recipe={name}")
    assert config.data.name == "fashion_mnist"
    changed = {k for k in default if config.to_dict()[k] != default[k]}
    assert (name == "default") == (not changed), (name, changed)
  assert module.get_config("recipe=vit").model.name == "vit"
  with pytest.raises(ValueError, match="Unknown recipe 'w64'.*multicrop"):
    module.get_config("recipe=w64")


def test_config_arguments_and_sweeps_read_text_the_same_way():
  from lejepa_jax.ablation import sweep_plan

  config = config_lib.load_config_file(config_path("fashion_mnist.py"))
  for text, want in (("yes", True), ("No", False), ("1", True), ("false", False)):
    assert config_lib.parse_value(text, False) is want
    swept = sweep_plan.with_overrides(config, [("data.skip_bad_records", text)])
    assert swept.data.skip_bad_records is want
  assert config_lib.parse_value("3", 1.5) == 3.0 and config_lib.parse_value("7", 2) == 7
  for bad, like in (("maybe", True), ("x", 1.0), ("1.5", 2)):
    with pytest.raises(ValueError, match="is not a"):
      config_lib.parse_value(bad, like)
    with pytest.raises(ValueError, match="is not a"):
      config_lib.load_config_file(config_path("fashion_mnist.py"), f"runlocal={bad}")
