"""`python -m lejepa_jax.export`: the command's flags and usage are in `lejepa_jax.export.command`."""

from lejepa_jax.export import command

command.main()
