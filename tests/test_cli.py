"""Every command parses its absl flags the same way (lejepa_jax.cli): --help, errors, overrides."""

import importlib
import os

import helpers
import pytest
from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli

COMMANDS = [
  "lejepa_jax.main",
  "lejepa_jax.evaluate",
  "lejepa_jax.ablate",
  "lejepa_jax.plan",
  "lejepa_jax.export.command",
  "lejepa_jax.prepare",
]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_prints_the_usage_and_an_unknown_flag_exits_2(name, capsys):
  module = importlib.import_module(name)
  with pytest.raises(SystemExit) as done:
    module.main(["--help"])
  assert done.value.code == 0
  out = capsys.readouterr().out
  assert "python -m lejepa_jax." in out and "flags of python -m" in out
  with pytest.raises(SystemExit) as done:
    module.main(["--no_such_flag=1"])
  assert done.value.code == 2
  assert "error:" in capsys.readouterr().err


def test_config_overrides_are_read_from_the_arguments_given_not_sys_argv(capsys):
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", None, "c", flag_values=values)
  path = os.path.join(helpers.ROOT, "configs", "fashion_mnist.py")
  cli.parse(values, [f"--config={path}:runlocal", "--config.total_steps=7"], prog="p", doc="d")
  assert config.value.total_steps == 7
  cli.parse(values, [f"--config={path}"], prog="p", doc="d")  # a second parse starts afresh
  assert config.value.total_steps == 1400  # the file's own value
  for steps in (5, 6):  # the same override again, in one process (main(argv) called twice)
    cli.parse(values, [f"--config={path}", f"--config.total_steps={steps}"], prog="p", doc="d")
    assert config.value.total_steps == steps
  with pytest.raises(SystemExit) as done:
    cli.parse(values, [f"--config={path}", "--config.no_such_key=1"], prog="p", doc="d")
  assert done.value.code == 2
  assert "the config has no key 'no_such_key'" in capsys.readouterr().err
