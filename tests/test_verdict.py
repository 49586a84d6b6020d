"""The verdict on decay: judged against the best constant LR (its LR searched too), a diverged run
named and left out, and the gain with its standard error in the report, best.json and `lrfind show`."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from click.testing import CliRunner

from lrfind import tune, tune_loop
from lrfind.cli import main
from lrfind.engine.records import TrialRecord
from lrfind.study import best as _best
from lrfind.study import report
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import tune_final

pytestmark = pytest.mark.filterwarnings("ignore:train returned a score without calling trial.report")
LOOP = dict(base_lr=0.1, epochs=1, steps_per_epoch=10, metric="accuracy", schedules=("cosine",), pruner="none",
            progress=False)


def load(out, name: str = "lrfind-loop-train") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage.connect(str(out / "study.log"), create=False))


def constant_score(lr: float) -> float:
    """A constant LR that does best at 0.03, a third of the base LR, and worse the further from it."""
    return 0.90 - 0.05 * abs(math.log(lr / 0.03))


def shown(out) -> str:
    result = CliRunner().invoke(main, ["show", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_constant_s_lr_is_searched_and_the_verdict_judges_decay_against_the_best_constant(tmp_path) -> None:
    def train(trial):
        score = constant_score(trial.lr) if trial.schedule == "constant" else 0.91
        trial.report(score + 0.001 * trial.seed)
        return score + 0.001 * trial.seed

    result = tune_loop(train, trials=12, out=str(tmp_path), **LOOP)
    study = result.study
    assert [t.params.get("lr_scale") for t in study.trials[:3]] == [1.0, 0.5, 2.0]    # the grid, queued first
    assert [_study.baseline_scale(t) for t in study.trials[:3]] == [1.0, 0.5, 2.0]
    plain = _study.constants(study)
    assert all(0.2 <= t.params["lr_scale"] <= 2.0 for t in plain)          # 0.2x-2x, max_peak 3
    constant = _study.constant_baseline(study)
    assert constant.number != 0 and constant.value == max(t.value for t in plain)   # not the base LR's
    lr = 0.1 * constant.params["lr_scale"]
    assert result.final["constant"]["lr"] == pytest.approx(lr) and result.final["constant"]["trial"] == constant.number
    assert result.final["constant"]["score"] == pytest.approx(constant_score(lr) + 0.002)   # seeds 1, 2, 3
    data = json.loads((tmp_path / "best.json").read_text())
    assert data["constant"]["lr"] == pytest.approx(lr) and data["setup"]["search_constant_lr"] is True
    gain = data["final"]["gain"]
    assert gain["difference"] == pytest.approx(0.91 - constant_score(lr)) and gain["pairs"] == 3
    text = report.verdict(study)
    assert f"constant baseline: trial {constant.number} at LR {lr:.3g}, the best of {len(plain)} constant-LR" in text
    assert f"over the best constant LR ({lr:.3g}), the mean ± standard error of 3 paired seeds" in text
    assert text in shown(tmp_path)


def test_a_diverged_run_is_named_and_left_out_of_the_means_and_the_gain(tmp_path) -> None:
    def train(trial):
        if trial.schedule == "constant":
            score = float("nan") if trial.seed == 2 else 0.80 + 0.01 * trial.seed
        else:
            score = 0.85 + 0.02 * trial.seed
        trial.report(score)
        return score

    result = tune_loop(train, trials=3, out=str(tmp_path), **LOOP)
    final = result.final
    assert final["constant"]["diverged"] == [2] and final["best"]["diverged"] == []
    assert final["constant"]["score"] == pytest.approx((0.81 + 0.83) / 2)       # seeds 1 and 3, not the NaN
    gain = json.loads((tmp_path / "best.json").read_text())["final"]["gain"]
    assert gain["pairs"] == 2 and gain["per_seed"] == pytest.approx([0.06, 0.08])   # seeds 1 and 3
    assert gain["diverged"] == {"best": [], "constant": [2]} and gain["verdict"] == "decay helps"
    text = report.verdict(result.study)
    assert ("the constant LR diverged in 1 of 3 runs with new seeds at LR 0.1 (seed 2: score NaN): left out of its "
            "mean and of the gain") in text
    assert "per seed +6.00, diverged, +8.00)" in text
    assert ("verdict: decay helps: +7.00 pp ± 1.00 validation accuracy over the best constant LR (0.1), the mean ± "
            "standard error of the 2 paired seeds where neither diverged (a clear gain") in text
    assert text in shown(tmp_path)


def test_a_gain_within_the_noise_is_no_clear_gain_and_a_steady_one_is(tmp_path) -> None:
    noise = {0: 0.001, 1: 0.004, 2: -0.003, 3: 0.001}     # seed 0: the search's

    def noisy(trial):
        score = 0.90 + (noise.get(trial.seed, 0) if trial.schedule != "constant" else 0)
        trial.report(score)
        return score

    text = report.verdict(tune_loop(noisy, trials=3, out=str(tmp_path / "noisy"), **LOOP).study)
    assert "verdict: no clear gain from decay: +0.07 pp ± 0.20 validation accuracy" in text

    def steady(trial):
        score = 0.90 + (0.01 + noise.get(trial.seed, 0) / 4 if trial.schedule != "constant" else 0)
        trial.report(score)
        return score

    text = report.verdict(tune_loop(steady, trials=3, out=str(tmp_path / "steady"), **LOOP).study)
    assert "verdict: decay helps: +1.02 pp ± 0.05 validation accuracy over the best constant LR" in text
    assert "(a clear gain: more than twice its standard error)" in text


def test_a_study_stored_before_the_constant_s_lr_was_searched_resumes_as_it_was(tmp_path) -> None:
    def train(trial):
        score = 0.85 if trial.schedule != "constant" else 0.80
        trial.report(score)
        return score

    tune_loop(train, trials=4, search_constant_lr=False, final_seeds=0, out=str(tmp_path), **LOOP)
    study = load(tmp_path)
    best = _study.best(study)
    assert best.user_attrs["schedule"] == "cosine"
    older = {k: v for k, v in study.user_attrs["lrfind_setup"].items() if k != "search_constant_lr"}
    study.set_user_attr("lrfind_setup", older)                    # as an older lrfind stored it
    final = {"best": {"trial": best.number, "schedule": "cosine", "lr": 0.1, "seeds": [1, 2],
                      "score_per_seed": [0.85, 0.86], "score": 0.855},
             "constant": {"trial": 0, "schedule": "constant", "lr": 0.1, "seeds": [1, 2],
                          "score_per_seed": [0.80, 0.80], "score": 0.80},
             "setup": {"kind": "seeds", "seeds": 2, "metric": "accuracy"}}
    study.set_user_attr("final", final)                           # ... with its results, before gains were kept
    result = tune_loop(train, trials=12, final_seeds=0, out=str(tmp_path), **LOOP)   # resumed, not refused
    trials = result.study.trials
    assert len(trials) > 4 and all("lr_scale" not in t.params for t in trials)   # its constant stays at the base LR
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]
    assert "search_constant_lr" not in result.study.user_attrs["lrfind_setup"]
    assert _study.best(result.study).number == best.number       # the stored results are still its own
    text = shown(tmp_path)
    assert "verdict: decay helps: +5.50 pp ± 0.50 validation accuracy over the constant LR (0.1)" in text
    assert "this constant ran at the base LR, which suits a schedule's peak" in text    # so the gain may be smaller
    assert json.loads((tmp_path / "best.json").read_text())["final"]["gain"]["pairs"] == 2
    with pytest.raises(ValueError, match="search_constant_lr False there, True here"):
        tune_loop(train, trials=12, search_constant_lr=True, out=str(tmp_path), **LOOP)


def _record(acc: float | None, loss: float | None, status: str = "complete") -> TrialRecord:
    rec = TrialRecord(spec=None)
    rec.status, rec.test_acc, rec.test_loss = status, acc, loss
    return rec


def test_a_retrain_at_chance_or_on_nan_is_diverged_and_averaged_into_nothing() -> None:
    limit = _best.chance_limit(10)
    assert limit == pytest.approx(0.15) and _best.chance_limit(2) == pytest.approx(0.55)
    assert _best.chance_limit(None) is None
    scores = tune_final._scores([_record(0.98, 0.05), _record(0.1135, 2.30), _record(None, None, "failed")],
                                [0, 1, 2], limit)
    assert scores["diverged"] == [1, 2] and scores["failed"] == 1
    assert scores["test_acc"] == pytest.approx(0.98) and scores["test_loss"] == pytest.approx(0.05)
    assert scores["test_acc_per_seed"] == [0.98, 0.1135, None]        # one per seed, the diverged too


def test_the_report_names_a_retrain_at_chance_and_judges_on_the_others() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(direction="maximize")
    dists = {"schedule": CategoricalDistribution(["constant", "cosine"]),
             "constant.use_warmup": CategoricalDistribution([False, True]),
             "lr_scale": FloatDistribution(0.2, 1.0, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"schedule": "constant", "constant.use_warmup": False,
                                                      "lr_scale": 1.0}, distributions=dists, value=0.97,
                                              user_attrs={"schedule": "constant", "params": {}, "peak_scale": 1.0}))
    study.add_trial(optuna.trial.create_trial(params={"schedule": "cosine"}, value=0.98,
                                              distributions={"schedule": dists["schedule"]},
                                              user_attrs={"schedule": "cosine", "params": {}}))
    study.set_user_attr("base_lr", 0.053)
    study.set_user_attr("lrfind_setup", {"search_constant_lr": True})
    side = dict(seeds=[0, 1, 2], failed=0)
    final = {"best": {"trial": 1, "schedule": "cosine", "lr": 0.053, "test_acc": 0.99,
                      "test_acc_per_seed": [0.990, 0.991, 0.989], "diverged": [], **side},
             "constant": {"trial": 0, "schedule": "constant", "lr": 0.053, "test_acc": 0.986,
                          "test_acc_per_seed": [0.986, 0.1135, 0.986], "diverged": [1], **side},
             "setup": {"train_images": 22000, "test_images": 10000, "steps": 344, "seeds": 3, "chance_acc": 0.1,
                       "diverged_at_or_below": 0.15}}
    study.set_user_attr("final", final)
    text = report.verdict(study)
    assert "99.00% vs constant 98.60% (+0.40 pp; per seed +0.40, diverged, +0.30)" in text
    assert ("the constant LR diverged in 1 of 3 retrains at LR 0.053 (seed 1: 11.35% test accuracy, chance 10%): "
            "left out of its mean and of the gain") in text
    assert "verdict: no clear gain from decay: +0.35 pp ± 0.05 test accuracy" not in text     # 0.35 > 2 x 0.05
    assert "verdict: decay helps: +0.35 pp ± 0.05 test accuracy over the best constant LR (0.053)" in text
    gain = report.best_json(study)["final"]["gain"]
    assert gain["pairs"] == 2 and gain["diverged"] == {"best": [], "constant": [1]}


def test_a_small_study_retrains_the_best_constant_and_names_a_diverged_retrain(mnist_root, tmp_path,
                                                                               monkeypatch) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    real = tune_final.run_trials

    def one_at_chance(*args, **kwargs):                 # the constant's second retrain ends at chance
        records = real(*args, **kwargs)
        if len(records) == 6:
            records[4].test_acc = 0.1135
        return records

    monkeypatch.setattr(tune_final, "run_trials", one_at_chance)
    result = tune(trials=8, parallel=8, epochs=2, batch_size=64, train_subset=256, device="cpu", progress=False,
                  base_lr=0.05, final=True, final_seeds=3, seed=0, out=str(tmp_path))
    study = result.study
    assert [t.params.get("lr_scale") for t in study.trials[:2]] == [1.0, 0.5]
    constant = _study.constant_baseline(study)
    final = result.final
    assert final["constant"]["trial"] == constant.number
    assert final["constant"]["lr"] == pytest.approx(0.05 * constant.params["lr_scale"])
    if final["best"]["trial"] == constant.number:
        pytest.skip("the constant won this small search: no pair to judge")
    assert final["constant"]["diverged"] == [1] and final["setup"]["chance_acc"] == pytest.approx(0.1)
    kept = [a for s, a in zip(final["constant"]["seeds"], final["constant"]["test_acc_per_seed"]) if s != 1]
    assert final["constant"]["test_acc"] == pytest.approx(sum(kept) / 2)
    assert final["gain"]["pairs"] == 2
    text = shown(tmp_path)
    assert "the constant LR diverged in 1 of 3 retrains at LR" in text and "seed 1: 11.35% test accuracy" in text
    assert " ± " in text.split("verdict: ")[-1]
    assert json.loads((tmp_path / "best.json").read_text())["final"]["gain"] == final["gain"]
