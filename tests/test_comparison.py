"""compare(): several range tests laid over each other and tabulated; `lrfind compare`."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from lrfind import Comparison, RangeTestResult, compare
from lrfind.cli import main


def sweep(depth: float, cliff: float, **config) -> RangeTestResult:
    """A made-up sweep whose loss falls by ``depth`` and blows up past the LR ``cliff``."""
    lrs = np.geomspace(1e-6, 1, 200)
    x = np.log10(lrs)
    c = np.log10(cliff)
    losses = 2.3 - depth / (1 + np.exp(-4 * (x - c + 1.2))) + np.where(x > c, 20 * (x - c) ** 2, 0)
    noise = np.random.default_rng(0).normal(0, 0.01, lrs.size)
    return RangeTestResult(lrs=lrs, losses=losses + noise, num_iter=200, config={"mode": "exp", **config})


def test_the_table_names_each_sweep_the_lowest_and_what_they_differ_in() -> None:
    low, high = sweep(1.5, 0.1, weight_decay=1e-4, batch_size=64), sweep(1.0, 0.02, weight_decay=0.0, batch_size=64)
    comparison = compare({"wd 1e-4": low, "wd 0": high})
    table = comparison.table()
    assert table.splitlines()[1].startswith("wd 1e-4") and table.splitlines()[2].startswith("wd 0")
    assert f"{low.suggested_lr:.3g}" in table and f"{high.suggested_lr:.3g}" in table
    assert "lowest loss: wd 1e-4" in table and "keeps falling to the highest LR: wd 1e-4" in table
    assert comparison.differences() == {"weight_decay": [1e-4, 0.0]}            # batch_size is the same
    assert "they differ in: weight_decay 0.0001, 0.0" in table and "different paces" not in table
    slower = RangeTestResult(low.lrs, low.losses, num_iter=400, config={**low.config, "num_iter": 400})
    high.config["num_iter"] = 200
    assert "note: the runs swept at different paces (num_iter)" in compare([slower, high]).table()
    assert repr(comparison).startswith("<Comparison of 2 range tests: suggested wd 1e-4 ")
    assert str(comparison) == table


def test_it_plots_to_a_file_and_for_notebooks(tmp_path) -> None:
    comparison = compare([sweep(1.5, 0.1), sweep(1.0, 0.02), sweep(0.5, 0.3, validation_loss=True)])
    assert list(comparison.results) == ["run 1", "run 2", "run 3"]
    assert "note: some sweeps recorded the validation loss" in comparison.table()
    ax = comparison.plot(path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert [line.get_label() for line in ax.get_legend().get_lines()][:1] == [
        f"run 1: {comparison.results['run 1'].suggested_lr:.2g}"]
    assert ax.get_xscale() == "log"
    assert comparison._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_are_read_from_folders_and_files_and_labelled_by_their_names(tmp_path) -> None:
    for name, depth in (("sgd", 1.5), ("adam", 1.0)):
        (tmp_path / name).mkdir()
        sweep(depth, 0.1, optimizer=name).to_json(tmp_path / name / "range_test.json")
    sweep(1.2, 0.05).to_csv(tmp_path / "other.csv")
    comparison = compare([tmp_path / "sgd", str(tmp_path / "adam"), tmp_path / "other.csv"])
    assert list(comparison.results) == ["sgd", "adam", "other"]
    assert comparison.differences() == {"optimizer": ["sgd", "adam", None]}
    # files of the same name are labelled by their paths
    same = compare([tmp_path / "sgd" / "range_test.json", tmp_path / "adam" / "range_test.json"])
    assert list(same.results) == [str(tmp_path / "sgd" / "range_test.json"), str(tmp_path / "adam" / "range_test.json")]


def test_wrong_inputs_say_what_to_give(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs two or more range tests, got 1"):
        compare([sweep(1.0, 0.1)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no range_test.json: give the --out folder"):
        compare([tmp_path / "empty", sweep(1.0, 0.1)])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json is not a range-test JSON file: it is not JSON \(Expecting"):
        compare([tmp_path / "broken.json", sweep(1.0, 0.1)])
    with pytest.raises(TypeError, match="RangeTestResults or paths to them, got int"):
        compare([1, 2])
    with pytest.raises(TypeError, match="a dict of label -> result or a list of results, got str"):
        compare("runs/sgd")
    assert isinstance(compare((sweep(1.0, 0.1), sweep(1.0, 0.2))), Comparison)


def test_the_command_prints_the_table_and_writes_the_plot(tmp_path) -> None:
    for name, depth in (("wd0", 1.0), ("wd1e-4", 1.5)):
        (tmp_path / name).mkdir()
        sweep(depth, 0.1).to_json(tmp_path / name / "range_test.json")
    out = tmp_path / "wd.png"
    run = CliRunner().invoke(main, ["compare", str(tmp_path / "wd0"), str(tmp_path / "wd1e-4"), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "lowest loss: wd1e-4" in run.output and out.exists()
    one = CliRunner().invoke(main, ["compare", str(tmp_path / "wd0")])
    assert one.exit_code == 2 and "needs two or more range tests, got 1" in one.output


def test_sweeps_of_one_model_with_other_optimizer_settings_say_what_differs() -> None:
    """find_lr records the optimizer it stepped with, so compare can name what the sweeps differ in."""
    import torch
    from torch import nn

    from lrfind import OptimizerConfig, find_lr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    data = [(torch.randn(16, 10), torch.randint(0, 3, (16,))) for _ in range(8)]
    sweeps = {f"wd {wd:g}": find_lr(model, data, optimizer=OptimizerConfig("sgd", weight_decay=wd), num_iter=30,
                                    progress=False, warn=False) for wd in (0.0, 1e-3)}
    sweeps["adamw"] = find_lr(model, data, optimizer=torch.optim.AdamW(model.parameters()), num_iter=30,
                              progress=False, warn=False)
    assert compare(sweeps).differences() == {"optimizer": ["sgd", "sgd", "AdamW"], "weight_decay": [0.0, 1e-3, 0.01]}
