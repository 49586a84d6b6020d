"""What lrfind writes for people: the schedules' listing, counts of epochs, the figures' off-axis
trials, and progress bars in redirected logs."""

from __future__ import annotations

import inspect
import io
import sys

import optuna
import pytest
from click.testing import CliRunner
from matplotlib.collections import PathCollection

from lrfind import load_best, tune, tune_loop
from lrfind.study import figures as plots
from lrfind.cli import main
from lrfind.models import LeNet, MLP

pytestmark = pytest.mark.filterwarnings("ignore:train returned a score without calling trial.report")
LOOP = dict(base_lr=0.1, steps_per_epoch=2, metric="accuracy", trials=2, final_seeds=0, progress=False)


def test_the_schedules_and_models_are_described_without_references_a_user_cannot_follow() -> None:
    listed = CliRunner().invoke(main, ["schedules"])
    assert listed.exit_code == 0, listed.output
    assert "exponential" in listed.output and "inverse_time" in listed.output and "warmup_exp" in listed.output
    assert "seeds/" not in listed.output
    for model in (LeNet, MLP):
        assert "seed" not in inspect.getdoc(model), model


def test_a_run_of_one_epoch_says_1_epoch(tmp_path) -> None:
    tune_loop(lambda trial: 0.5, epochs=1, out=str(tmp_path), **LOOP)
    header = (tmp_path / "best_schedule.py").read_text().split("\n# For a run")[0]
    assert "1 epoch = 2 steps" in header and "epochs" not in header
    assert "tuned on 1 epoch," in str(load_best(tmp_path))
    with pytest.raises(ValueError, match="got 1 epoch of 2;"):             # a run too short for one-cycle
        tune_loop(lambda trial: 0.5, epochs=1, schedules=("onecycle",), out=str(tmp_path / "short"), **LOOP)


def _study(finals: dict[str, list[float]]) -> optuna.Study:
    """An in-memory study whose trials reported ``finals[...]`` (accuracy after each epoch)."""
    study = optuna.create_study(direction="maximize")
    for name, accs in finals.items():
        trial = study.ask()
        trial.set_user_attr("schedule", "constant")
        trial.set_user_attr("val_acc", accs)
        study.tell(trial, accs[-1])
    return study


def test_a_trial_below_the_accuracy_axis_is_marked_on_its_floor_in_every_figure(tmp_path) -> None:
    good = {f"good{i}": [0.95 + 0.002 * i, 0.97 + 0.002 * i] for i in range(10)}
    study = _study({**good, "diverged": [0.10, 0.11]})
    for draw in (plots.plot_history, plots.plot_val_acc):
        ax = draw(study, path=tmp_path / f"{draw.__name__}.png").axes[0]
        floor = ax.get_ylim()[0]
        assert floor > 11                                          # the diverged trial is below the axis
        on_floor = [tuple(xy) for c in ax.collections if isinstance(c, PathCollection)
                    for xy in c.get_offsets() if xy[1] == pytest.approx(floor)]
        expected = [(10, floor)] if draw is plots.plot_history else [(1, floor), (2, floor)]   # trial; epochs
        assert on_floor == expected, draw.__name__


def _plain(err: str) -> bool:
    return "\x1b[" not in err and "\r" not in err


def test_progress_bars_of_a_study_write_plain_lines_where_stderr_is_not_a_terminal(mnist_root, tmp_path,
                                                                                 monkeypatch, capsys) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    tune(trials=2, parallel=2, epochs=1, batch_size=64, train_subset=256, device="cpu", base_lr=0.05, final=False,
         seed=0, out=str(tmp_path), progress=True)        # a bar of trials, and below it one of each batch's steps
    err = capsys.readouterr().err
    assert "trials" in err and "2 trials, epoch 1/1" in err and _plain(err)     # the bars, as plain lines


def test_progress_bars_of_a_loop_write_plain_lines_where_stderr_is_not_a_terminal(tmp_path, capsys) -> None:
    tune_loop(lambda trial: 0.5, epochs=1, out=str(tmp_path), **{**LOOP, "progress": True, "final_seeds": 1})
    err = capsys.readouterr().err
    assert "trials" in err and "best and constant with new seeds" in err and _plain(err)


def test_progress_false_still_shows_no_bar(tmp_path, capsys) -> None:
    tune_loop(lambda trial: 0.5, epochs=1, out=str(tmp_path), **{**LOOP, "final_seeds": 1})
    assert "trials" not in capsys.readouterr().err


def test_a_bar_on_a_terminal_is_redrawn_in_place(tmp_path, monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    tune_loop(lambda trial: 0.5, epochs=1, out=str(tmp_path), **{**LOOP, "progress": True})
    assert "trials" in sys.stderr.getvalue() and "\r" in sys.stderr.getvalue()     # as tqdm draws on a terminal


def test_the_range_tests_bar_writes_plain_lines_where_stderr_is_not_a_terminal(capsys) -> None:
    import torch

    from lrfind import find_lr

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    find_lr(torch.nn.Linear(4, 2), loader, num_iter=20, progress=True, warn=False)
    err = capsys.readouterr().err
    assert "range test" in err and _plain(err)


def test_the_lr_figure_draws_its_curves_from_plain_records(tmp_path) -> None:
    """Each top trial's curve as computed, in its schedule's colour, labelled with its score; the
    range test's loss on the shared LR axis."""
    import numpy as np
    from matplotlib.colors import to_hex

    from lrfind.plots.lr_curves import plot_top_lr_curves
    from lrfind.plots.records import LRCurve, LRCurves, RangeTestCurve
    from lrfind.plots.study import schedule_colour

    steps = np.arange(20)
    curves = (LRCurve(3, "cosine", 0.1 * (0.5 + 0.5 * np.cos(np.pi * steps / 20)), False, 0.97, 0.1),
              LRCurve(0, "constant", np.full(20, 0.1), False, None, 0.25))
    lrs = np.geomspace(1e-5, 1, 50)
    data = LRCurves(curves=curves, schedules=("constant", "cosine"), base_lr=0.1, steps=20, steps_per_epoch=10,
                    metric="accuracy", range_test=RangeTestCurve(lrs, 2.3 - np.log10(lrs / 1e-5) / 5, (1e-3, 0.3)))
    fig = plot_top_lr_curves(data, path=tmp_path / "lr.png")
    left, right = fig.axes
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["#3 cosine: 97.00%", "#0 constant: loss 0.25", "base LR 0.1"]
    assert to_hex(right.lines[0].get_color()) == schedule_colour("cosine", data.schedules)
    assert np.array_equal(right.lines[1].get_ydata(), curves[1].lrs) and left.get_yscale() == "log"
    assert "(validation accuracy)" in right.get_title() and (tmp_path / "lr.png").is_file()
