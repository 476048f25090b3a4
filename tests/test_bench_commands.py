"""The benchmark commands run to their tables (their numbers are measurements, not checked here)."""

import json

import pytest

from lejepa_jax.bench import ablate, ablate_end_to_end


@pytest.mark.slow
def test_bench_ablate_times_both_sides_and_prints_the_speed_up(capsys):
  ablate.main(
    [
      "--recipe=vit",
      "--variant=Mi/7",
      "--batch=8",
      "--members=2",
      "--steps=1",
      "--run_steps=10",
      "--member_convolutions=per_member",
    ]
  )
  out = capsys.readouterr().out
  assert "vit Mi/7" in out and "batch 8" in out
  assert "| 2 sequential runs |" in out
  row = next(line for line in out.splitlines() if line.startswith("| 2 members, one vmapped program"))
  assert "x set-up" in row and "x end to end" in row


@pytest.mark.slow
def test_bench_lower_times_both_tracings_and_the_shared_program_is_smaller(capsys):
  from lejepa_jax.bench import lower

  # The tiny test config: ViT-Mi/8, two blocks of one graph (no drop-path). Nothing reads data.
  lower.main(["--configs=tests/tiny_config.py:unused", "--platforms=cuda"])
  out = capsys.readouterr().out
  assert "lowered for cuda" in out
  row = next(line for line in out.splitlines() if line.startswith("| tests/tiny_config.py"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1] == "vit Mi/8" and cells[4].endswith("x")
  once, every = (float(v) for v in cells[5].split(" / "))
  assert 0 < once < every  # one block's program instead of two


def test_bench_ablate_end_to_end_without_the_data_says_how_to_prepare_it(tmp_path):
  with pytest.raises(SystemExit, match="python -m lejepa_jax.prepare fashion_mnist"):
    ablate.main(["--end_to_end", f"--data_dir={tmp_path}", "--members=2"])


def test_steady_step_time_is_read_between_the_first_and_last_metrics_lines(tmp_path):
  rows = [{"step": 10, "train_seconds": 30.0}, {"step": 20, "train_seconds": 32.0}]
  rows.append({"step": 40, "train_seconds": 37.0})
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert ablate_end_to_end.steady_step_seconds(str(tmp_path)) == pytest.approx(7.0 / 30)


def test_the_end_to_end_commands_parse_with_the_commands_own_flags(tmp_path):
  """Each command line the end-to-end benchmark starts is one its program accepts, with the
  benchmark's settings in the config it trains."""
  from lejepa_jax import ablate as ablate_command
  from lejepa_jax import cli
  from lejepa_jax import main as main_command

  overrides = ablate_end_to_end._overrides(60, 20, str(tmp_path), {"model.variant": "Mi/7"})
  lambdas = ["0.0", "0.05"]
  runs = ablate_end_to_end.sequential_commands("vit", lambdas, overrides, str(tmp_path))
  commands = [(main_command, c) for _, c in runs]
  commands.append(
    (ablate_command, ablate_end_to_end.ablation_command("vit", lambdas, overrides, "s")[1])
  )
  for value, (module, command) in zip([*lambdas, None], commands):
    flag_values = module._FLAGS
    cli.parse(flag_values, command[3:], prog=command[2], doc="")
    config = flag_values.config
    assert (config.total_steps, config.checkpoint_every, config.log_every) == (60, 60, 20)
    assert config.model.variant == "Mi/7" and config.data.data_dir == str(tmp_path)
    if value is not None:
      assert config.loss.sigreg_weight == float(value)
    else:
      assert flag_values.sweep == ["loss.sigreg_weight=0.0,0.05"]
