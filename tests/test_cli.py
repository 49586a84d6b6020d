"""The command line, end to end on a small subset of the real MNIST files."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from lrfind.cli import main


@pytest.fixture
def run(mnist_root, monkeypatch):
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    return invoke


def test_range_test_writes_plot_json_and_csv(run, tmp_path) -> None:
    out = tmp_path / "out"
    result = run("range-test", "--device", "cpu", "--num-iter", "40", "--batch-size", "32", "-q", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "suggested LR" in result.output and "stopped:" in result.output
    data = json.loads((out / "range_test.json").read_text())
    assert "suggested_lr" in data and len(data["losses"]) == len(data["lrs"]) <= 40
    assert data["config"]["model"] == "lenet"
    assert (out / "range_test.png").stat().st_size > 1000
    assert (out / "range_test.csv").read_text().startswith("iteration,lr,loss,smoothed")


def test_range_test_mlp_adam_repeats_with_another_method(run, tmp_path) -> None:
    """Choices are taken without case (and stored in the registries' spelling)."""
    result = run("range-test", "--device", "CPU", "--model", "MLP", "--optimizer", "Adam", "--num-iter", "40",
                 "--repeats", "2", "--method", "Steepest", "-q", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "range_test.json").read_text())
    assert len(data["seed_lrs"]) == 2 and data["method"] == "steepest"
    assert "(steepest" in result.output


def test_range_test_adamw_with_weight_decay(run, tmp_path) -> None:
    result = run("range-test", "--device", "cpu", "--model", "mlp", "--optimizer", "adamw", "--weight-decay", "0.05",
                 "--num-iter", "20", "-q", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "range_test.json").read_text())["config"]
    assert config["optimizer"] == "adamw" and config["weight_decay"] == 0.05


def test_range_test_sweeps_under_autocast_with_amp(run, tmp_path) -> None:
    result = run("range-test", "--device", "cpu", "--model", "mlp", "--num-iter", "20", "--amp", "bf16", "-q",
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "range_test.json").read_text())["config"]["amp"] == "bf16"
    bad = run("range-test", "--amp", "fp8", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "'fp8' is not one of 'bf16', 'fp16'" in bad.output


def test_range_test_clips_the_gradients_with_max_grad_norm(run, tmp_path) -> None:
    clipped = run("range-test", "--device", "cpu", "--model", "mlp", "--num-iter", "20", "--max-grad-norm", "0.1",
                  "-q", "--out", str(tmp_path / "clipped"))
    assert clipped.exit_code == 0, clipped.output
    plain = run("range-test", "--device", "cpu", "--model", "mlp", "--num-iter", "20", "-q", "--out", str(tmp_path))
    assert plain.exit_code == 0, plain.output
    data = json.loads((tmp_path / "clipped" / "range_test.json").read_text())
    assert data["config"]["max_grad_norm"] == 0.1
    assert data["losses"] != json.loads((tmp_path / "range_test.json").read_text())["losses"]
    bad = run("range-test", "--max-grad-norm", "0", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "--max-grad-norm must be a positive finite number, got 0.0" in bad.output


def test_range_test_records_the_validation_loss_with_val_batches(run, tmp_path) -> None:
    result = run("range-test", "--device", "cpu", "--num-iter", "20", "--val-batches", "2", "--batch-size", "32", "-q",
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "range_test.json").read_text())
    assert data["config"]["validation_loss"] is True and data["config"]["val_batches"] == 2
    steps = run("range-test", "--device", "cpu", "--num-iter", "20", "--batch-size", "32", "-q", "--out",
                str(tmp_path / "train"))
    assert steps.exit_code == 0 and json.loads((tmp_path / "train" / "range_test.json").read_text())["losses"] != data["losses"]


def test_range_test_prints_a_warning_once_in_its_summary(run, tmp_path, monkeypatch) -> None:
    from lrfind.rangetest import suggest
    from lrfind.rangetest.result import RangeTestWarning

    monkeypatch.setattr(suggest, "caveats", lambda lrs, losses: ["the curve needs a second look"])
    warnings.simplefilter("error", RangeTestWarning)         # a Python warning as well would fail here
    result = run("range-test", "--device", "cpu", "--num-iter", "20", "-q", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.count("the curve needs a second look") == 1
    assert "warning: the curve needs a second look" in result.output
    assert json.loads((tmp_path / "range_test.json").read_text())["warnings"] == ["the curve needs a second look"]


def test_range_test_on_your_own_model_from_a_file(run, tmp_path) -> None:
    net = tmp_path / "net.py"
    net.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    result = run("range-test", "--device", "cpu", "--num-iter", "20", "-q", "--model", f"{net}:make",
                 "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "range_test.json").read_text())["config"]["model"] == f"{net}:make"


def test_the_clis_method_names_are_the_suggestion_methods() -> None:
    from lrfind.cli.options import SUGGESTION_METHODS
    from lrfind.rangetest.suggest import DEFAULT_METHOD, METHODS

    assert SUGGESTION_METHODS == list(METHODS) and SUGGESTION_METHODS[0] == DEFAULT_METHOD


@pytest.mark.parametrize("args, message", [
    (["--start-lr", "0"], "--start-lr 0.0: must be positive"),
    (["--start-lr", "-1"], "must be positive"),
    (["--start-lr", "0.1", "--end-lr", "0.01"], "--end-lr 0.01: must be larger"),
    (["--model", "resnet"], "'resnet' is neither a built-in model (lenet, mlp) nor your own"),
    (["--model", "torch.nn:Identity"], "--model torch.nn:Identity must return 10 class scores per image"),
    (["--model", "nowhere/net.py:make"], "--model nowhere/net.py:make: no file"),
    (["--dataset", "cifar"], "'cifar' is neither a built-in data set (mnist, fashion-mnist) nor your own"),
    (["--model", "LeNet5"], "'LeNet5' (did you mean lenet?) is neither a built-in model"),
    (["--dataset", "fashion"], "'fashion' (did you mean fashion-mnist?) is neither"),
    (["--method", "fastest"], "'fastest' is not one of"),
    (["--device", "gpu"], "'gpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:N': did you mean cuda?"),
    (["--device", "cuda1"], "'cuda1' is not one of 'auto', 'cpu', 'cuda', 'cuda:N': did you mean cuda?"),
    (["--optimizer", "sdg"], "'sdg' is not one of 'sgd', 'adam', 'adamw': did you mean sgd?"),
    (["--model", "mpl"], "'mpl' (did you mean mlp?) is neither a built-in model"),
    (["--num-iter", "1"], "--num-iter"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
    (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be a positive finite number, got nan; leave it out"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be a positive finite number, got 0.0"),
    (["--optimizer", "rmsprop"], "'rmsprop' is not one of"),
    (["--val-batches", "0"], "0 is not in the range x>=1"),
    (["--val-batches", "100000"], "--val-batches 100000: the validation split has"),
])
def test_range_test_bad_arguments_exit_2(run, args, message, tmp_path) -> None:
    result = run("range-test", "--out", str(tmp_path / "o"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_missing_data_folder_is_one_line_exit_1(run, tmp_path) -> None:
    result = run("range-test", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train-images-idx3-ubyte" in lines[0] and "--data-dir" in lines[0]


def test_help_explains_with_an_example(run) -> None:
    result = run("range-test", "--help")
    assert result.exit_code == 0 and "Examples:" in result.output and "--end-lr" in result.output


def test_schedules_lists_every_entry_with_parameters() -> None:
    from lrfind import SCHEDULES

    result = CliRunner().invoke(main, ["schedules"])
    assert result.exit_code == 0
    for name in SCHEDULES:
        assert name in result.output
    assert "step_size" in result.output and "T_mult" in result.output


def test_schedules_plot_all_and_with_parameters(tmp_path) -> None:
    result = CliRunner().invoke(main, ["schedules", "plot", "--out", str(tmp_path / "all.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.png").stat().st_size > 10_000
    result = CliRunner().invoke(main, ["schedules", "plot", "MultiStep", "--param", "milestones=100,200",
                                       "--param", "gamma=0.3", "--out", str(tmp_path / "ms.png")])   # any case
    assert result.exit_code == 0, result.output


def test_schedules_plot_draws_a_cycled_momentum_beside_the_lr(tmp_path, monkeypatch) -> None:
    from lrfind.plots import figures as plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_schedules", lambda curves, **kw: drawn.update(curves=curves, **kw))
    for flag in ("true", "False"):
        result = CliRunner().invoke(main, ["schedules", "plot", "cyclic", "--param", f"cycle_momentum={flag}",
                                           "--param", "step_size_up=30", "--param", "step_size_down=20"])
        assert result.exit_code == 0, result.output
        caption = drawn["curves"]["cyclic"][1]
        if flag == "true":
            assert drawn["momenta"]["cyclic"].max() == pytest.approx(0.9)
            assert "cycle_momentum=True" in caption and "base_momentum=" not in caption     # its defaults
        else:
            assert not drawn["momenta"] and "cycle_momentum=False" in caption


@pytest.mark.parametrize("args, message", [
    (["cosinus"], "unknown schedule 'cosinus' (did you mean cosine?); choose from constant"),
    (["step", "--param", "gamma=0"], "step: gamma must be in (0, 1), got 0"),
    (["step", "--param", "gamma"], "write NAME=VALUE"),
    (["step", "cosine", "--param", "gamma=0.5"], "exactly one schedule"),
    (["multistep", "--param", "milestones=200,100"], "milestones must be"),
])
def test_schedules_plot_bad_input_exit_2(args, message, tmp_path) -> None:
    result = CliRunner().invoke(main, ["schedules", "plot", *args, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_cuda_without_a_gpu_is_a_clear_error(run, tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("range-test", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--device cuda: device 'cuda' is not available here" in result.output
    result = run("range-test", "--device", "CUDA:1", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--device cuda:1: device 'cuda:1' is not available here" in result.output
    result = run("tune", "--device", "cuda:0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "device 'cuda:0' is not available here; use 'cpu' or 'auto'" in result.output


def test_the_console_entry_keeps_exit_codes_and_output() -> None:
    """``python -m lrfind`` leaves through os._exit: its output must be flushed, its codes kept."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "lrfind", "schedules"], capture_output=True, text=True)
    assert ok.returncode == 0 and "onecycle" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "lrfind", "tune", "--trials", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--trials must be a positive integer, got 0" in bad.stderr


def test_the_command_lines_names_match_the_registries() -> None:
    from lrfind._names import AUGMENT_NAMES, DATASET_NAMES, MODEL_NAMES
    from lrfind.data.augment import AUGMENTATIONS
    from lrfind.data.builtin import DATASETS
    from lrfind.models import MODELS

    assert sorted(MODEL_NAMES) == sorted(MODELS) and sorted(DATASET_NAMES) == sorted(DATASETS)
    assert sorted(AUGMENT_NAMES) == sorted(AUGMENTATIONS)


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from lrfind.cli import main; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def _out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity "
                                      "of 79.19 GiB of which 1.02 GiB is free.")


def test_range_test_out_of_gpu_memory_is_one_line_that_says_what_to_lower(run, monkeypatch, tmp_path) -> None:
    import lrfind.rangetest.runner

    monkeypatch.setattr(lrfind.rangetest.runner, "range_test", _out_of_memory)      # the sweeps the command runs
    result = run("range-test", "--device", "cpu", "-q", "--batch-size", "512", "--out", str(tmp_path))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert ("out of GPU memory with one model at --batch-size 512 (CUDA out of memory): lower --batch-size "
            "or use a smaller model") in result.output


def test_tune_out_of_gpu_memory_with_one_trial_is_one_line_and_keeps_the_study(run, monkeypatch, tmp_path) -> None:
    from lrfind.study import tune_search

    monkeypatch.setattr(tune_search, "run_trials", _out_of_memory)
    result = run("tune", "--device", "cpu", "-q", "--trials", "2", "--parallel", "1", "--base-lr", "0.05",
                 "--train-subset", "256", "--epochs", "1", "--out", str(tmp_path))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "out of GPU memory with one model at --batch-size 128" in result.output
    assert "run the same command again" in result.output and (tmp_path / "study.log").is_file()


def test_tune_passes_the_channels_last_and_fold_choices_to_the_engine(run, monkeypatch, tmp_path) -> None:
    from lrfind.study import tune_search

    seen, real = [], tune_search.run_trials

    def spy(*args, **kwargs):
        seen.append((kwargs["channels_last"], kwargs["fold"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_search, "run_trials", spy)
    for flag, out in ((), "auto"), (("--no-channels-last",), "off"), (("--no-fold",), "whole"):
        result = run("tune", "--device", "cpu", "-q", "--trials", "1", "--base-lr", "0.05", "--train-subset", "256",
                     "--epochs", "1", "--no-final", "--out", str(tmp_path / out), *flag)
        assert result.exit_code == 0, result.output
    # None: the engine's default, channels-last on a CPU
    assert seen == [(None, True), (False, True), (None, False)]


def test_fold_is_true_or_false() -> None:
    from lrfind import TuneConfig

    with pytest.raises(ValueError, match="fold must be True or False, got 'no'"):
        TuneConfig(fold="no")


@pytest.mark.parametrize("command", [["range-test"], ["tune", "--trials", "2"], ["schedules", "plot"],
                                     ["compare", "a.json", "b.json"]])
def test_an_out_path_under_a_file_stops_before_any_work(run, tmp_path, monkeypatch, command) -> None:
    """A folder that cannot be made is said as the command starts, not after its sweep or study."""
    monkeypatch.chdir(tmp_path)
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "taken").write_text("")
    result = run(*command, "--out", "taken/out" + (".png" if command[0] in ("schedules", "compare") else ""))
    assert result.exit_code == 2
    assert "cannot create the folder taken" in result.output and "taken is a file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "taken"]


def test_verbose_log_lines_say_when_on_the_clock_of_the_closing_time_line(mnist_root, tmp_path) -> None:
    """``-v`` stamps each line with the seconds since the process started, so that a gap in the
    time line (say, after the final stage) can be placed between two lines."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "LRFIND_DATA_DIR": str(mnist_root), "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "lrfind", "-v", "tune", "--device", "cpu", "-q", "--trials", "2",
                           "--base-lr", "0.05", "--train-subset", "256", "--epochs", "1", "--no-final",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stamps = [float(m[1]) for m in re.finditer(r"^ *(\d+\.\d\d) s lrfind\.[\w.]+: ", done.stderr, re.M)]
    assert re.search(r"^ *\d+\.\d\d s lrfind\.study\.tune: report written; waiting for its figures$", done.stderr, re.M)
    total = float(re.search(r"; (\d+\.\d) s since the process started", done.stdout)[1])
    assert len(stamps) >= 3 and stamps == sorted(stamps) and 0 < stamps[0] and stamps[-1] <= total + 0.1


def test_ctrl_c_exits_130_with_a_line_that_says_what_was_kept(run, monkeypatch, tmp_path) -> None:
    """click's own answer to Ctrl-C is 'Aborted!' and exit code 1."""
    from lrfind.rangetest import runner
    from lrfind.study import tune as tuner

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "range_test", ctrl_c)
    result = run("range-test", "--device", "cpu", "-q", "--out", str(tmp_path / "rt"))
    assert result.exit_code == 130 and f"interrupted: nothing was written to {tmp_path / 'rt'}" in result.output
    monkeypatch.setattr(tuner, "_data", ctrl_c)                  # before the study began
    result = run("tune", "--device", "cpu", "-q", "--trials", "1", "--out", str(tmp_path / "t"))
    assert result.exit_code == 130 and "interrupted: run the same command again to go on" in result.output


@pytest.mark.parametrize("args", [["tune", "--out", ""], ["range-test", "--out", " "], ["show", ""],
                                  ["compare", "", "x"], ["range-test", "--data-dir", ""],
                                  ["schedules", "plot", "--out", ""]])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(run, tmp_path, monkeypatch, args) -> None:
    """`--out "$RUN"` with RUN unset wrote a study into the current folder."""
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2 and "is empty; give a path (an unset shell variable?)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_figure_file_matplotlib_cannot_write_is_refused_before_the_work(run, tmp_path) -> None:
    result = run("schedules", "plot", "--out", str(tmp_path / "s.doc"))
    assert result.exit_code == 2 and "s.doc: matplotlib cannot write .doc files; use one of" in result.output
    assert ".pdf" in result.output and list(tmp_path.iterdir()) == []
    result = run("schedules", "plot", "cosine", "--out", str(tmp_path / "s.svg"))
    assert result.exit_code == 0 and (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("args", [["tune", "--trials", "0"], ["tune", "--range-test-iters", "1"],
                                  ["tune", "--base-lr", "-1"], ["tune", "--timeout", "soon"],
                                  ["range-test", "--start-lr", "0"], ["range-test", "--end-lr", "1e-9"]])
def test_plain_values_are_checked_before_torch_is_imported(args) -> None:
    """A typo is told at once (click's own checks take a fraction of a second; torch's import, seconds)."""
    import subprocess
    import sys

    script = ("import sys; from click.testing import CliRunner; from lrfind.cli import main; "
              f"r = CliRunner().invoke(main, {args!r}); print(r.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("args", [["-v", "range-test", "--start-lr", "0"], ["range-test", "-v", "--start-lr", "0"],
                                  ["tune", "--trials", "0", "-v"], ["show", "-v", "--epochs", "0"]])
def test_verbose_is_taken_before_and_after_the_command(args) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "No such option" not in result.output, result.output
    assert "must be" in result.output or "is not in the range" in result.output, result.output
