"""The benchmarks (bench/) and the studies behind the defaults (experiments/) run rarely, some only on
a GPU: small runs of each on the CPU keep them from rotting. Each runs as its module would from the
repository root (``python -m bench.run``), as their docs say, in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, out: Path, out_flag: str = "--out", data: Path | None = None) -> tuple[dict, str]:
    """Run ``bench.<script>`` (or ``experiments.<script>``) as ``python -m`` runs it from the
    repository root (in this process: ``run_script``), with MNIST from ``data``; its JSON results
    and its stdout."""
    module = script.removesuffix(".py")
    package = "bench" if (ROOT / "bench" / f"{module}.py").is_file() else "experiments"
    env = {"LRFIND_DATA_DIR": str(data)} if data is not None else {}
    printed = run_script([str(ROOT / package / f"{module}.py"), *args, out_flag, str(out)],
                         module=f"{package}.{module}", cwd=ROOT, env=env)
    return json.loads(out.read_text()), printed


def test_own_model_bench_runs_quick_on_the_cpu(tmp_path) -> None:
    result, _ = bench("own_model.py", "--quick", out=tmp_path / "own_model.json", out_flag="--json")
    assert set(result["ms_per_trial_epoch"]) == {"plain torch loop, 1 model", "lrfind engine, K=1",
                                                 "lrfind engine, K=2"}
    assert all(ms > 0 for ms in result["ms_per_trial_epoch"].values()) and result["device"] == "cpu"


def test_stretch_bench_retrains_a_studys_best_at_other_lengths(mnist_root, tmp_path, monkeypatch) -> None:
    from lrfind import tune

    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    tune(trials=2, epochs=2, batch_size=64, train_subset=256, device="cpu", progress=False, base_lr=0.05,
         final=False, out=str(tmp_path / "study"))
    result, stdout = bench("stretch.py", str(tmp_path / "study"), "--epochs", "1", "2", "--seeds", "1",
                           "--train-subset", "512", out=tmp_path / "stretch.json", data=mnist_root)
    runs = result["runs"]
    assert [r["epochs"] for r in runs] == [1, 2]
    assert all(0 <= a <= 1 for r in runs for a in r["best_test_acc"] + r["constant_test_acc"])
    assert " 2 epochs: " in stdout


def test_storage_and_painter_benches_run_small_on_the_cpu(tmp_path) -> None:
    """They drive the tuner's search and the report through its private functions: keep them working."""
    for script, args in (("storage.py", ["--trials", "4", "--epochs", "2", "--parallel", "2", "--repeats", "1"]),
                         ("painter.py", ["--emulate", "--repeats", "1"])):
        result, _ = bench(script, *args, out=tmp_path / f"{script}.json", out_flag="--json")
        assert result


def test_loop_vs_engine_bench_runs_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("loop_vs_engine.py", "--trials", "2", "--subset", "512", "--epochs", "1",
                           out=tmp_path / "loop_vs_engine.json", out_flag="--json", data=mnist_root)
    for side in ("engine", "loop"):
        assert result[side]["complete"] + result[side]["pruned"] == 2 and result[side]["ms_per_trial_epoch"] > 0
    # the same first trial: lrfind's engine and a plain loop, same seed, batches and schedule
    assert result["engine"]["constant_val_acc"] == pytest.approx(result["loop"]["constant_val_acc"], abs=1e-6)
    assert "loop / engine time:" in stdout


def test_range_test_spread_bench_runs_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("range_test_spread.py", "--batch-sizes", "32", "--seeds", "2", "--repeats", "2",
                           "--num-iter", "60", "--train-subset", "512", out=tmp_path / "spread.json", data=mnist_root)
    result = result["by_batch_size"]["32"]
    assert [len(r["seed_lrs"]) for r in result["runs"]] == [2, 2]
    assert [len(r["falls"]) for r in result["runs"]] == [2, 2]
    assert all(set(r["shallow"]) <= {0, 1} and isinstance(r["sweeps_again"], bool) for r in result["runs"])
    assert result["summary"]["sweeps"] <= 4 and "sweeps more than 3x" in stdout


def test_engine_variants_bench_compares_the_layouts_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("engine_variants.py", "--device", "cpu", "--k", "2", "--train-images", "512",
                           "--rounds", "1", out=tmp_path / "variants.json", data=mnist_root)
    rows = result["by_k"]["2"]
    assert set(rows) >= {"looped, channels-last (the CPU default)", "looped, usual layout"}
    assert all(value > 0 for value in rows.values()) and "ms per trial-epoch" in stdout


def test_text_suggestion_quality_bench_runs_small_on_the_cpu(tmp_path) -> None:
    result, stdout = bench("suggestion_quality_text.py", "--chars", "24000", "--num-iter", "30", "--seeds", "1",
                           "--epochs", "1", "--factors", "1,3", out=tmp_path / "text.json")
    assert set(result["sweeps"]) == {"clipped", "unclipped"}
    assert set(result["rows"]) == {"1x", "3x", "unclipped suggestion"}
    assert result["rows"]["3x"]["lr"] == pytest.approx(3 * result["sweeps"]["clipped"]["suggested_lr"])
    assert "best:" in stdout


def test_rise_quality_bench_runs_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, _ = bench("rise_quality.py", "--train-images", "512", "--seeds", "1", "--num-iter", "30",
                      out=tmp_path / "rise.json", data=mnist_root)
    assert set(result["optimizers"]) == {"sgd", "adam"} and 0 < result["start_accuracy"] <= 1
    assert all(len(o["grid"]) >= 5 for o in result["optimizers"].values())


def test_weight_decay_compare_bench_runs_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("weight_decay_compare.py", "--decays", "0,5e-3", "--epochs", "1", "--seeds", "1",
                           "--num-iter", "40", "--batch-size", "128", out=tmp_path / "wd.json", data=mnist_root)
    assert list(result["runs"]) == ["wd 0", "wd 0.005"] and result["num_iter"] == 40
    assert all(0 <= run["mean_val_acc"] <= 1 for run in result["runs"].values())
    assert "they differ in: weight_decay 0.0, 0.005" in stdout


def test_same_init_bench_measures_the_gap_both_ways_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("same_init.py", "--pairs", "2", "--epochs", "1", out=tmp_path / "same.json", data=mnist_root)
    assert result["train_images"] == 2500 and result["val_images"] == 500
    for mode in ("same", "different"):
        assert len(result[mode]["cosine_val_acc"]) == 2 and result[mode]["gap_std"] >= 0
    assert "the gap's variance" in stdout and -1 <= result["same"]["rank_correlation"] <= 1


def test_init_studies_bench_runs_both_defaults_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("init_studies.py", "--studies", "1", "--quick", out=tmp_path / "init.json",
                           out_flag="--json", data=mnist_root)
    assert [len(result["runs"][mode]) for mode in ("same", "each")] == [1, 1]
    assert result["runs"]["each"][0]["base_lr"] == result["runs"]["same"][0]["base_lr"]     # one range test's LR
    assert "the same weights: best schedule" in stdout and "a seed each     : best schedule" in stdout


def test_pruning_replay_bench_judges_a_study_run_without_pruning(mnist_root, tmp_path, monkeypatch) -> None:
    from lrfind import tune

    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    tune(trials=8, epochs=3, batch_size=64, train_subset=256, device="cpu", progress=False, base_lr=0.05,
         pruner="none", final=False, out=str(tmp_path / "study"), schedules=("wsd", "warmup"))
    result, stdout = bench("pruning_replay.py", str(tmp_path / "study"), "--top", "3", out=tmp_path / "replay.json",
                           out_flag="--json")
    assert result["trials"] == 8 and len(result["top"]) == 3 and "rank correlation of epoch 2" in stdout
    assert 0 <= result["pruned_waiting_for_decay"] <= result["pruned_median"] <= 3     # 3 judged, from the 6th


def test_the_suites_accuracy_difference_carries_its_standard_error(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))          # bench is a package of the repository, not installed
    from bench import run

    # means 99.0 and 98.5 (pp); each side's variance 1.0 over 3 retrains: s.e. sqrt(1/3 + 1/3)
    diff = run.accuracy_difference([0.98, 0.99, 1.0], [0.975, 0.985, 0.995])
    assert diff["acc_difference_pp"] == pytest.approx(0.5)
    assert diff["acc_difference_se_pp"] == pytest.approx((2 / 3) ** 0.5, abs=1e-3)
    assert run.accuracy_difference([0.99], [0.98, 0.97]) == {"acc_difference_pp": None, "acc_difference_se_pp": None}
    assert run.accuracy_difference(None, [0.98, 0.97])["acc_difference_pp"] is None


def test_quality_bench_gives_both_sides_the_same_budget_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("quality.py", "--trials", "2", "--epochs", "1", "--train-subset", "1024", "--seeds", "2",
                           "--seed", "1", "--range-test-iters", "60", out=tmp_path / "quality.json", out_flag="--json",
                           data=mnist_root)
    (pair,) = result["pairs"]
    ours, theirs = pair["lrfind"], pair["baseline"]
    assert pair["seed"] == 1 and theirs["trials"] == result["trials"] == 2 and theirs["trial_epochs"] <= 2
    for side in (ours, theirs):       # both sides average every retrain, one at chance included
        assert len(side["best_test_acc_per_seed"]) == 2
        assert side["best_test_acc"] == pytest.approx(sum(side["best_test_acc_per_seed"]) / 2)
    assert pair["acc_difference_pp"] == pytest.approx(100 * (ours["best_test_acc"] - theirs["best_test_acc"]), abs=1e-3)
    assert result["difference_mean_pp"] == pytest.approx(pair["acc_difference_pp"], abs=1e-3)
    assert result["difference_se_pp"] is None and result["studies"] == 1      # one study: no spread over studies
    assert "difference, lrfind - loop" in stdout


def test_quality_bench_summarises_pairs_of_studies(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from bench import quality

    pairs = [{"lrfind": {"best_test_acc": a}, "baseline": {"best_test_acc": b}}
             for a, b in [(0.990, 0.988), (0.989, 0.990), (0.991, 0.987)]]
    s = quality.summary(pairs)
    assert s["lrfind_mean_pp"] == pytest.approx(99.0) and s["baseline_mean_pp"] == pytest.approx(98.833, abs=1e-3)
    assert s["difference_mean_pp"] == pytest.approx(0.167, abs=1e-3)          # +0.2, -0.1, +0.4
    assert s["difference_se_pp"] == pytest.approx(0.2517 / 3 ** 0.5, abs=1e-3)
    assert s["lrfind_ahead"] == 2 and s["studies"] == 3


def test_range_test_profile_runs_small_on_the_cpu(mnist_root, tmp_path) -> None:
    result, stdout = bench("range_test_profile.py", "--device", "cpu", "--iters", "30", out=tmp_path / "rt.json",
                           out_flag="--json", data=mnist_root)
    parts = result["parts"]
    assert parts["iterations"] == 30 and parts["calls"]["eager steps"] == 30 and not parts["replayed_from_a_graph"]
    assert parts["ms"]["sweep"] >= parts["ms"]["eager steps"] > 0 and result["per_step"]["sweep_step_ms"] > 0
    assert "find_lr, 30 steps at batch 64 on cpu" in stdout


def test_fused_sweeps_bench_compares_side_by_side_with_one_after_another(mnist_root, tmp_path) -> None:
    result, stdout = bench("fused_sweeps.py", "--device", "cpu", "--ks", "1,2", "--num-iter", "10", "--rounds", "1",
                           "--train-subset", "1000", out=tmp_path / "fused.json", data=mnist_root)
    assert [row["k"] for row in result["rows"]] == [1, 2]
    assert all(row["fused"]["fused"] and not row["sequential"]["fused"] for row in result["rows"])
    assert result["rows"][1]["fused"]["steps"] == result["rows"][1]["sequential"]["steps"] == 20
    assert "one after another / side by side" in stdout and result["command"].startswith("python -m bench.fused_sweeps")
