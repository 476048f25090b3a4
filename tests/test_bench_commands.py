"""The benchmark commands run to their tables (their numbers are measurements, not checked here)."""

import pytest

from lejepa_jax.bench import ablate


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


def test_bench_ablate_end_to_end_without_the_data_says_how_to_prepare_it(tmp_path):
  with pytest.raises(SystemExit, match="python -m lejepa_jax.data.prepare fashion_mnist"):
    ablate.main(["--end_to_end", f"--data_dir={tmp_path}", "--members=2"])
