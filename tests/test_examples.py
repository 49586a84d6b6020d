"""The examples run as a user runs them, on the small copy of MNIST, and write what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import run_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path, data: Path) -> str:
    """``python examples/SCRIPT ARGS`` in ``cwd`` (in this process: ``run_script``); its stdout."""
    return run_script([str(EXAMPLES / script), *args], cwd=cwd, env={"LRFIND_DATA_DIR": str(data), "MPLBACKEND": "Agg"})


def test_own_model_then_use_result(mnist_root, tmp_path) -> None:
    out = run("own_model.py", cwd=tmp_path, data=mnist_root)
    assert "suggested LR" in out and "LRs set to" in out
    assert (tmp_path / "own_model_range_test.png").stat().st_size > 1000
    saved = tmp_path / "own_model_range_test.json"
    out = run("use_result.py", str(saved), cwd=tmp_path, data=mnist_root)
    assert "scheduler = SequentialLR" in out and "epoch 2: validation accuracy" in out


def test_own_data_runs_a_study_then_use_tuned_trains_with_its_best(mnist_root, tmp_path) -> None:
    out = run("own_data.py", str(tmp_path / "study"), cwd=tmp_path, data=mnist_root)
    assert "best schedule" in out and "test accuracy" in out
    assert (tmp_path / "study" / "best_schedule.py").is_file()
    again = run("own_data.py", str(tmp_path / "study"), cwd=tmp_path, data=mnist_root)    # resumes: same result
    assert again.splitlines()[0] == out.splitlines()[0]

    # use_tuned trains with that study's best schedule (tuned on 1 epoch) for 2 epochs
    out = run("use_tuned.py", str(tmp_path / "study"), "2", cwd=tmp_path, data=mnist_root)
    assert "tuned: " in out and "tuned on 1 epoch" in out and "for 2 epochs of" in out
    assert "epoch 2: validation accuracy" in out


def test_own_data_digit_values_is_a_regression_on_real_images(mnist_root, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from lrfind.cli import main

    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    result = CliRunner().invoke(main, ["range-test", "--dataset", f"{EXAMPLES}/own_data.py:digit_values", "--model",
                                       f"{EXAMPLES}/own_data.py:DigitRegressor", "--num-iter", "40", "--device",
                                       "cpu", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "examples of 1x28x28, 1 regression target" in result.output


def test_own_loop_tunes_a_plain_training_loop_and_resumes(mnist_root, tmp_path) -> None:
    args = [str(tmp_path / "study"), "--trials", "4", "--subset", "1200", "--epochs", "1"]
    out = run("own_loop.py", *args, cwd=tmp_path, data=mnist_root)
    assert "base LR" in out and "best schedule:" in out and "test accuracy: best schedule" in out
    assert (tmp_path / "study" / "best_schedule.py").is_file() and (tmp_path / "study" / "history.png").is_file()
    again = run("own_loop.py", *args, cwd=tmp_path, data=mnist_root)          # resumed: nothing left to run
    assert [line for line in again.splitlines() if line.startswith("best schedule:")] == \
        [line for line in out.splitlines() if line.startswith("best schedule:")]


def test_own_loop_text_tunes_a_language_model_on_its_validation_loss(mnist_root, tmp_path) -> None:
    out = run("own_loop_text.py", str(tmp_path / "study"), "--trials", "2", "--epochs", "1", "--chars", "24000",
              "--sweep-iters", "40", cwd=tmp_path, data=mnist_root)
    assert "characters of Python's standard library" in out and "median over 3 sweeps" in out
    assert "range test, the median of 3 sweeps' suggestions" in out           # tune_loop took find_lr's result
    assert "validation loss" in out and "test loss: best schedule" in out and "bits/char" in out
    for name in ("range_test.png", "lr_curves.png", "best_schedule.py"):
        assert (tmp_path / "study" / name).stat().st_size > 300, name


def test_compare_sweeps_tabulates_three_batch_sizes(mnist_root, tmp_path) -> None:
    out = run("compare_sweeps.py", "60", cwd=tmp_path, data=mnist_root)
    rows = out.splitlines()
    assert [row.split()[:2] for row in rows[1:4]] == [["batch", "32"], ["batch", "128"], ["batch", "512"]]
    assert (tmp_path / "compare_batch_sizes.png").stat().st_size > 10_000


def test_hugging_face_sweeps_dict_batches_and_trains(tmp_path) -> None:
    """Runs where transformers is installed (it is not one of lrfind's dependencies)."""
    import pytest

    pytest.importorskip("transformers")
    out = run("hugging_face.py", cwd=tmp_path, data=tmp_path)
    assert "suggested LR" in out and "epoch 2: test accuracy" in out
    assert (tmp_path / "hugging_face_range_test.png").stat().st_size > 10_000


def test_distributed_sweeps_and_tunes_a_ddp_model_in_two_processes_under_torchrun(mnist_root, tmp_path) -> None:
    env = {**os.environ, "LRFIND_DATA_DIR": str(mnist_root), "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(EXAMPLES / "distributed.py"), "ddp", "--tune", "3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ddp in 2 processes:" in proc.stdout and proc.stdout.count("suggested LR:") == 1    # printed once
    assert (tmp_path / "distributed_ddp_range_test.png").stat().st_size > 10_000
    assert proc.stdout.count("3 finished trials") == 1 and (tmp_path / "distributed_ddp_study" / "best.json").exists()


def test_lightning_loop_tunes_a_lightning_module_through_trainer_runs(mnist_root, tmp_path) -> None:
    """Runs where lightning is installed (it is not one of lrfind's dependencies)."""
    import pytest

    pytest.importorskip("lightning")
    out = run("lightning_loop.py", str(tmp_path / "study"), "--trials", "4", "--epochs", "1", "--subset", "1200",
              cwd=tmp_path, data=mnist_root)
    assert "suggested LR" in out and ("validation accuracy" in out or "no schedule beat" in out)
    assert "% test after 2 epochs" in out and (tmp_path / "study" / "best.json").exists()


def test_hugging_face_loop_tunes_through_trainer_runs(tmp_path) -> None:
    """Runs where transformers and accelerate are installed (neither is one of lrfind's dependencies)."""
    import pytest

    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    out = run("hugging_face_loop.py", str(tmp_path / "study"), "--trials", "2", "--epochs", "1", cwd=tmp_path,
              data=tmp_path)
    assert "suggested LR" in out and "val loss" in out and "test accuracy after 2 epochs" in out
    assert (tmp_path / "study" / "best.json").exists()
