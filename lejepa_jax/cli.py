"""The command line of every entry point: absl flags, parsed the same way, and one logging set-up.

Every command (`lejepa_jax.main`, `evaluate`, `ablate`, `plan`, `export`, `prepare`,
`examples.hidden_structure`, `bench`) defines its flags on a `flags.FlagValues()` of its own (so
importing several of them together is fine, and `main` can run repeatedly in one process, as tests
do) and its `main(argv=None)` reads them with `parse`:

    _PROG = "python -m lejepa_jax.export"
    _FLAGS = flags.FlagValues()
    _OUT = flags.DEFINE_string("out", None, "a new directory for the export", flag_values=_FLAGS)

    def main(argv=None):
      cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("out",))
      ... _OUT.value ...

`argv` holds the arguments without the program name (None: sys.argv[1:]). `--help` (or -h) prints
the module docstring and the flags; an unknown flag, a bad value, a missing required flag or a wrong
positional argument prints the flags and a one-line "error: ..." to stderr and exits with status 2.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from absl import flags

HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def flags_help(flag_values: flags.FlagValues) -> str:
  """The flags of `flag_values`, one entry each with its help, default and type."""
  text = flag_values.get_help(prefix="  ", include_special_flags=False)
  # get_help heads each defining module's flags with its name (a file path when run as __main__).
  return "\n".join(line[2:] for line in text.splitlines() if line.startswith("    "))


def help_text(flag_values: flags.FlagValues, prog: str, doc: str | None) -> str:
  return f"{(doc or prog).strip()}\n\nflags of {prog}:\n{flags_help(flag_values)}"


def usage_error(flag_values: flags.FlagValues, prog: str, message: str) -> NoReturn:
  """Prints the flags and `prog: error: message` to stderr and exits with status 2 (as argparse)."""
  print(
    f"flags of {prog} (--help for the full usage):\n{flags_help(flag_values)}\n\n"
    f"{prog}: error: {message}",
    file=sys.stderr,
  )
  raise SystemExit(2)


def parse(
  flag_values: flags.FlagValues,
  argv: Sequence[str] | None,
  *,
  prog: str,
  doc: str | None,
  required: Sequence[str] = (),
  positional: Sequence[tuple[str, Sequence[str] | None]] = (),
) -> list[str]:
  """Parses `argv` (without the program name; None: sys.argv[1:]) into `flag_values` afresh.

  Args:
    flag_values: the module's own flags; reset to their defaults first, so that repeated calls do
      not see an earlier call's values.
    argv: the arguments; flags and positional arguments may come in any order ("--" ends flags).
    prog: the command, e.g. "python -m lejepa_jax.export", for the help and error messages.
    doc: the usage text `--help` prints before the flags (the module docstring).
    required: names of flags that must be given a value (their default is None).
    positional: (name, choices or None) of each positional argument the command takes.

  Returns:
    The positional arguments, as many as `positional` names.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  flag_args = argv[: argv.index("--")] if "--" in argv else argv
  if any(arg in HELP_ARGS for arg in flag_args):
    print(help_text(flag_values, prog, doc))
    raise SystemExit(0)
  flag_values.unparse_flags()
  # ml_collections defines a flag per `--config.<key>` override while parsing; drop an earlier call's,
  # or repeating an override in-process fails as a flag "defined twice".
  for name in [name for name in flag_values if "." in name]:
    delattr(flag_values, name)
  try:
    with _as_sys_argv([prog, *argv]):
      args = flag_values([prog, *argv])[1:]
  except flags.Error as e:
    usage_error(flag_values, prog, str(e))
  except (AttributeError, KeyError) as e:  # a --config.<key> override the config does not have
    key = str(e).strip("\"'")
    if not any(arg.startswith("--") and "." in arg.split("=")[0] and key in arg for arg in argv):
      raise  # from inside a config file, not from an override
    usage_error(
      flag_values,
      prog,
      f"the config has no key {key!r} (a --config.<key>=value override "
      "names a field that does not exist: check its spelling and nesting)",
    )
  if len(args) > len(positional):
    usage_error(flag_values, prog, f"unrecognized arguments: {' '.join(args[len(positional) :])}")
  if len(args) < len(positional):
    names = ", ".join(name for name, _ in positional[len(args) :])
    usage_error(flag_values, prog, f"the following arguments are required: {names}")
  for (name, choices), value in zip(positional, args):
    if choices is not None and value not in choices:
      usage_error(
        flag_values,
        prog,
        f"argument {name}: invalid choice: {value!r} (choose from {', '.join(choices)})",
      )
  missing = [f"--{name}" for name in required if flag_values[name].value is None]
  if missing:
    usage_error(flag_values, prog, f"the following flags are required: {', '.join(missing)}")
  return args


@contextlib.contextmanager
def _as_sys_argv(argv: list[str]) -> Iterator[None]:
  """sys.argv = argv while parsing: ml_collections' config flags read their `--config.key=value`
  overrides from sys.argv, not from the arguments parsed."""
  saved, sys.argv = sys.argv, argv
  try:
    yield
  finally:
    sys.argv = saved


def setup_logging(all_processes: bool = False) -> None:
  """Progress lines ("HH:MM:SS message") on the console from lejepa_jax; libraries (orbax, grain,
  TFDS log every detail through absl) at warnings only. With several processes (jax.distributed)
  only process 0 logs progress unless `all_processes`; the others report warnings and errors."""
  import jax
  from absl import logging as absl_logging

  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  absl_logging.set_verbosity(absl_logging.WARNING)
  verbose = all_processes or jax.process_index() == 0
  logging.getLogger("lejepa_jax").setLevel(logging.INFO if verbose else logging.WARNING)
