"""find_lr through the public API: sweep, stop, restore, param groups, loaders, modes."""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import dynamo_modules_after, toy_batches
from lrfind import OptimizerConfig, RangeTestResult, RangeTestWarning, Sweep, find_lr


make_data = toy_batches


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm brings buffers (running stats, a counter) that the sweep changes.
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def state_of(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "opt": repr(opt.state_dict()["param_groups"]),
        "opt_state": {k: {n: t.clone() if isinstance(t, torch.Tensor) else t for n, t in v.items()}
                      for k, v in opt.state_dict()["state"].items()},
        "torch_rng": torch.get_rng_state().clone(),
        "np_rng": np.random.get_state()[1].copy(),
        "py_rng": random.getstate(),
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["tensors"].keys() == b["tensors"].keys()
    for k in a["tensors"]:
        assert torch.equal(a["tensors"][k], b["tensors"][k]), k
    for ga, gb in zip(a["grads"], b["grads"]):
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    assert a["training"] == b["training"]
    assert a["opt"] == b["opt"]
    assert a["opt_state"].keys() == b["opt_state"].keys()
    for k in a["opt_state"]:
        for n, t in a["opt_state"][k].items():
            other = b["opt_state"][k][n]
            assert torch.equal(t, other) if isinstance(t, torch.Tensor) else t == other
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert np.array_equal(a["np_rng"], b["np_rng"])
    assert a["py_rng"] == b["py_rng"]


def warmed_up(model: nn.Module) -> torch.optim.Optimizer:
    """An Adam optimizer with state, and gradients left on the parameters, as in real use."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = make_data(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    model.eval()   # an unusual mode that must survive too
    return opt


def test_sweep_records_every_step_and_spaces_lrs_exponentially() -> None:
    model = make_model()
    result = find_lr(model, make_data(), num_iter=20, end_lr=1e-2, progress=False)
    assert result.stop_reason == "completed"
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 20
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs[-1] == pytest.approx(1e-2)
    assert np.allclose(np.diff(np.log(result.lrs)), np.log(1e4) / 19)


def test_linear_mode_spaces_lrs_evenly() -> None:
    result = find_lr(make_model(), make_data(), num_iter=11, start_lr=1e-3, end_lr=1e-2, mode="linear",
                     progress=False)
    assert np.allclose(np.diff(result.lrs), 9e-4)


def test_state_restored_bit_for_bit() -> None:
    model = make_model()
    opt = warmed_up(model)
    random.seed(3)
    np.random.seed(3)
    before = state_of(model, opt)
    find_lr(model, make_data(), optimizer=opt, num_iter=30, progress=False, seed=7)
    assert_same_state(before, state_of(model, opt))


# torch.optim's optimizers a range test can sweep (not LBFGS, which steps through a closure; not
# Rprop, which reads its LR once; not SparseAdam, for sparse gradients only), as this torch has them
SWEEPABLE = [name for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam",
                               "ASGD", "Adafactor", "Muon") if hasattr(torch.optim, name)]


@pytest.mark.parametrize("name", SWEEPABLE)
def test_every_torch_optimizer_sweeps_and_is_restored_bit_for_bit(name: str) -> None:
    """Each keeps state of its own (square averages, steps, momentum buffers, ...) that the sweep
    changes and must put back (Muon takes the matrices only; the sweep trains those)."""
    model = make_model()
    if name == "Muon":
        matrices = [p for p in model.parameters() if p.ndim == 2]
        opt = torch.optim.Muon(matrices, lr=0.02)
    else:
        opt = getattr(torch.optim, name)(model.parameters(), lr=0.01)
    x, y = make_data(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    before = state_of(model, opt)
    result = find_lr(model, make_data(), optimizer=opt, num_iter=20, progress=False, warn=False)
    assert len(result.losses) > 5 and np.isfinite(result.losses[:5]).all()
    assert_same_state(before, state_of(model, opt))


def test_a_compiled_model_sweeps_compiled_and_is_restored_bit_for_bit() -> None:
    """``torch.compile(model)`` as users train it (dynamo's graphs run eagerly here, backend
    "eager", to keep the test fast): its state dict's keys carry ``_orig_mod.``, and it is put back."""
    model = make_model()
    try:
        compiled = torch.compile(model, backend="eager")
        opt = warmed_up(compiled)
    except RuntimeError as e:                  # a Python this torch's compiler does not support yet
        pytest.skip(f"torch.compile does not run here: {e}")
    before = state_of(compiled, opt)
    result = find_lr(compiled, make_data(), optimizer=opt, num_iter=20, progress=False, warn=False)
    assert len(result.losses) == 20 and np.isfinite(result.losses[:10]).all()
    assert_same_state(before, state_of(compiled, opt))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), compiled.state_dict().values()))


def test_state_restored_after_an_exception_inside_the_sweep() -> None:
    model = make_model()
    opt = warmed_up(model)
    before = state_of(model, opt)
    calls = []

    def failing_step(m, batch):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt   # also a Ctrl-C in the middle of the sweep
        x, y = batch
        return nn.functional.cross_entropy(m(x), y)

    with pytest.raises(KeyboardInterrupt):
        find_lr(model, make_data(), optimizer=opt, step_fn=failing_step, num_iter=30, progress=False)
    assert len(calls) == 6
    assert_same_state(before, state_of(model, opt))


def test_param_groups_keep_their_lr_ratio() -> None:
    model = make_model()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                           {"params": model[4].parameters(), "lr": 1.0}], lr=1.0)
    seen = []

    def step(m, batch):
        seen.append([g["lr"] for g in opt.param_groups])
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    result = find_lr(model, make_data(), optimizer=opt, step_fn=step, num_iter=10, end_lr=1e-2, progress=False)
    seen = np.array(seen)
    assert np.allclose(seen[:, 0] / seen[:, 1], 0.1)
    assert np.allclose(seen[:, 1], result.lrs)       # lrs are the largest group's
    assert result.group_ratios == pytest.approx([0.1, 1.0])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]   # and are put back


def test_apply_sets_the_suggestion_and_keeps_the_groups_ratios() -> None:
    model = make_model()
    head, body = list(model[-1].parameters()), [p for m in list(model)[:-1] for p in m.parameters()]
    optimizer = torch.optim.SGD([{"params": body, "lr": 0.01}, {"params": head, "lr": 0.1}], momentum=0.9)
    result = find_lr(model, make_data(n_batches=40), optimizer=optimizer, num_iter=40, progress=False)
    assert result.suggested_lr is not None and result.group_ratios == pytest.approx([0.1, 1.0])
    assert result.apply(optimizer) == result.suggested_lr
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * result.suggested_lr,
                                                                         result.suggested_lr])
    result.apply(optimizer, lr=0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.5])
    with pytest.raises(ValueError, match="the optimizer has 1 parameter group"):
        result.apply(torch.optim.SGD(model.parameters(), lr=1.0))
    unclear = RangeTestResult(np.geomspace(1e-6, 1, 50), np.full(50, 2.3))
    with pytest.raises(ValueError, match="no suggested LR to apply .*pass lr="):
        unclear.apply(optimizer)


def test_loader_shorter_than_num_iter_is_started_again() -> None:
    result = find_lr(make_model(), make_data(n_batches=3), num_iter=10, end_lr=1e-3, progress=False)
    assert result.stop_reason == "completed" and len(result.losses) == 10


def test_empty_loader_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no batches"):
        find_lr(make_model(), [], num_iter=10, progress=False)


def test_divergence_stops_the_sweep_and_says_where() -> None:
    result = find_lr(make_model(), make_data(), num_iter=200, start_lr=1e-3, end_lr=1e4, progress=False)
    assert result.stop_reason in ("diverged", "loss became NaN/Inf")
    assert len(result.losses) < 200
    assert result.stop_lr == pytest.approx(result.lrs[-1])


def scripted(values):
    """A step function whose loss follows ``values`` (and still depends on the weights)."""
    it = iter(values)

    def step(model, batch):
        out = model(batch[0]).sum() * 0.0
        return out + float(next(it))
    return step


def test_nan_loss_stops_at_the_first_nan() -> None:
    values = [2.0 - 0.01 * i for i in range(7)] + [float("nan")] * 50
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=50, progress=False)
    assert result.stop_reason == "loss became NaN/Inf"
    assert len(result.losses) == 8 and np.isnan(result.losses[-1])


def test_divergence_detection_is_right_for_negative_losses() -> None:
    # The loss falls from -1 to -5, then rises back to +15: the rule must fire on the rise only.
    values = list(np.linspace(-1, -5, 40)) + list(np.linspace(-5, 15, 60))
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=100,
                     diverge_factor=3.0, ema_beta=0.0, check_every=1, progress=False)
    assert result.stop_reason == "diverged"
    # best -5, limit -5 + 2 * 5 = 5: first value above 5 ends it
    assert result.losses[-1] > 5 and result.losses[-2] <= 5
    falling = list(np.linspace(-1, -5, 60))
    quiet = find_lr(make_model(), make_data(), step_fn=scripted(falling), num_iter=60, progress=False)
    assert quiet.stop_reason == "completed"


def test_gradient_accumulation_takes_several_batches_per_step() -> None:
    counted = []

    class Counting:
        def __iter__(self):
            for b in make_data(4):
                counted.append(1)
                yield b

    result = find_lr(make_model(), Counting(), num_iter=6, accumulation_steps=3, end_lr=1e-3, progress=False)
    assert len(result.losses) == 6 and len(counted) == 18


def test_custom_step_fn_for_dict_batches() -> None:
    batches = [{"x": x, "y": y} for x, y in make_data()]
    result = find_lr(make_model(), batches, num_iter=10, end_lr=1e-2, progress=False,
                     step_fn=lambda m, b: nn.functional.cross_entropy(m(b["x"]), b["y"]))
    assert len(result.losses) == 10 and np.isfinite(result.losses).all()


def test_a_one_shot_iterator_that_runs_out_is_a_clear_error_and_the_model_is_restored() -> None:
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="ran out after 8 batches and cannot be started again: it is a generator"):
        find_lr(model, (b for b in make_data()), num_iter=10, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # long enough, it sweeps; repeats one after another would need it again, and say so before they start
    assert len(find_lr(make_model(), iter(make_data(n_batches=10)), num_iter=10, progress=False).losses) == 10
    with pytest.raises(ValueError, match="repeats=3 sweeps the loader 3 times, but it is a list_iterator"):
        find_lr(make_model(), iter(make_data()), num_iter=10, repeats=3, fused=False, progress=False)
    # side by side, one pass takes a batch a sweep at every step: 3 x 10 from 8 batches cannot be had
    with pytest.raises(ValueError, match="ran out after 8 batches .* the 3 sweeps side by side take 3 batches a step. "
                                         ".* num_iter <= 2, or fewer repeats"):
        find_lr(make_model(), iter(make_data()), num_iter=10, repeats=3, progress=False)
    assert len(find_lr(make_model(), iter(make_data(n_batches=30)), num_iter=10, repeats=3, progress=False,
                       slow_down=False).seed_losses) == 3


def test_a_loader_is_started_once_a_sweep_and_no_more() -> None:
    """Asking whether it can be started again must not start it: a DataLoader's workers would spawn."""
    class Counted:
        def __init__(self, batches) -> None:
            self.batches, self.started = batches, 0

        def __iter__(self):
            self.started += 1
            return iter(self.batches)

    train, val = Counted(make_data()), Counted(make_data(seed=1))
    find_lr(make_model(), train, val_loader=val, num_iter=5, repeats=2, seed=0, slow_down=False, progress=False)
    assert (train.started, val.started) == (2, 1)


def test_a_one_shot_validation_loader_without_a_length_is_read_once_for_every_repeat() -> None:
    """A generator has no len(): all of it is the validation set, read once, used by every repeat."""
    result = find_lr(make_model(), make_data(), val_loader=(b for b in make_data(n_batches=2, seed=1)), num_iter=10,
                     repeats=2, seed=0, progress=False)
    assert len(result.seed_losses) == 2 and all(len(losses) == 10 for losses in result.seed_losses)
    assert result.config["validation_loss"]


def test_a_model_that_returns_a_tuple_gets_a_clear_error() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), x

    for optimizer in (None, lambda m: torch.optim.SGD(m.parameters(), lr=0.1)):     # lrfind's step, torch's
        model = Pair()
        with pytest.raises(TypeError, match=r"the model returned \(\(16, 3\) float32, \(16, 10\) float32\), not a "
                                            r"tensor.*step_fn=lambda model, batch: <loss>, say loss_fn\(model\(x\)\[0\], y\)"):
            find_lr(model, make_data(), optimizer=optimizer and optimizer(model), num_iter=10, progress=False)


def test_a_model_that_returns_a_dict_is_told_to_take_its_item() -> None:
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.fc(x)}

    with pytest.raises(TypeError, match=r"returned \{logits: \(16, 3\) float32\}, not a tensor.*say "
                                        r"loss_fn\(model\(x\)\['logits'\], y\)"):
        find_lr(Named(), make_data(), num_iter=10, progress=False)


@pytest.mark.parametrize("dtype, says", [
    (torch.float16, r"weights are float16 and the batch's inputs float32: .*amp='fp16' \(--amp fp16\)"),
    (torch.bfloat16, r"weights are bfloat16 and the batch's inputs float32: .*amp='bf16'"),
    (torch.float64, r"weights are float64 and the batch's inputs float32: make them one dtype \(model.float\(\)"),
])
def test_a_model_of_another_float_dtype_than_its_batches_is_told_why_it_fails(dtype, says) -> None:
    """A model made .half() for mixed precision fails deep inside torch (``mat1 and mat2 must have
    the same dtype``); the error says what mixed precision looks like instead."""
    with pytest.raises(RuntimeError, match=r"first training step failed .*Check that the loader's batches fit the "
                                           r"model; the model's " + says):
        find_lr(make_model().to(dtype), make_data(), num_iter=10, progress=False)


def test_labels_out_of_range_name_the_batch() -> None:
    batches = [(x, y + 5) for x, y in make_data()]
    with pytest.raises(IndexError, match=r"first training step failed on a batch of \(\(16, 10\) float32, \(16,\) "
                                         r"int64\): Target \d+ is out of bounds. Check"):
        find_lr(make_model(), batches, num_iter=10, progress=False)


def test_a_value_error_inside_torch_names_the_batch_too() -> None:
    """One example reaching a batch-norm layer: torch's ValueError, with the batch that caused it."""
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    singles = [(x[:1], y[:1]) for x, y in make_data()]
    with pytest.raises(ValueError, match=r"first training step failed on a batch of \(\(1, 10\) float32, \(1,\) "
                                         r"int64\): Expected more than 1 value per channel.*Check"):
        find_lr(model, singles, num_iter=10, progress=False)


def test_batches_of_three_say_how_to_take_the_inputs_and_targets_from_them() -> None:
    triples = [(x, y, torch.arange(len(y))) for x, y in make_data()]
    with pytest.raises(TypeError, match=r"got a tuple of 3: \(\(16, 10\) float32, \(16,\) int64, \(16,\) int64\); "
                                        r"pass step_fn=.*cross_entropy\(model\(batch\[0\]\), batch\[1\]\)"):
        find_lr(make_model(), triples, num_iter=10, progress=False)
    result = find_lr(make_model(), triples, num_iter=10, progress=False, warn=False,
                     step_fn=lambda model, batch: nn.functional.cross_entropy(model(batch[0]), batch[1]))
    assert len(result.losses) == 10


def test_a_first_step_error_of_a_kind_made_from_other_arguments_still_names_the_batch() -> None:
    class Coded(RuntimeError):
        def __init__(self, code: int, detail: str) -> None:
            super().__init__(f"error {code}: {detail}")

    def step_fn(model, batch):
        raise Coded(7, "boom")

    with pytest.raises(RuntimeError, match=r"first training step failed on a batch of .*: error 7: boom\. Check"):
        find_lr(make_model(), make_data(), step_fn=step_fn, num_iter=10, progress=False)


class HuggingFaceStyle(nn.Module):
    """A model as Hugging Face writes them: keyword inputs, and the loss among its outputs when the
    batch has labels (outputs as a dict, or as an object with attributes)."""

    def __init__(self, as_object: bool = False) -> None:
        super().__init__()
        self.net, self.as_object = make_model(), as_object

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(input_ids)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return type("Output", (), out)() if self.as_object else out


class BatchEncodingLike(collections.UserDict):
    """Hugging Face's BatchEncoding is a UserDict, not a dict."""


@pytest.mark.parametrize("as_object", [False, True])
def test_dict_batches_of_a_hugging_face_style_model_need_no_step_fn(as_object: bool) -> None:
    pairs = make_data()
    batches = [BatchEncodingLike(input_ids=x, labels=y) for x, y in pairs]
    kw = dict(num_iter=12, end_lr=1e-2, seed=0, progress=False)
    expected = find_lr(make_model(), pairs, **kw).losses         # the same net on (x, y) batches
    for optimizer in (None, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)):  # lrfind's step, torch's
        model = HuggingFaceStyle(as_object)
        before = copy.deepcopy(model.state_dict())
        result = find_lr(model, batches, optimizer=optimizer and optimizer(model), **kw)
        np.testing.assert_allclose(result.losses, expected, rtol=1e-6)
        assert not result.config["cuda_graph"]
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dict_batches_that_give_no_loss_get_a_clear_error_and_the_model_is_restored() -> None:
    pairs = make_data()
    cases = [
        (HuggingFaceStyle(), [{"input_ids": x} for x, _ in pairs], {},
         r"returned no loss for a batch with keys \['input_ids'\].*'labels'\); add them, or pass step_fn"),
        (make_model(), [{"image": x, "label": y} for x, y in pairs], {},
         r"as keyword arguments .* refused them: .*unexpected keyword argument 'image'.*loss_fn\(model\(batch"),
        (HuggingFaceStyle(), [{"input_ids": x, "labels": y} for x, y in pairs], {"loss_fn": nn.CrossEntropyLoss()},
         r"keys \['input_ids', 'labels'\] has no \(inputs, targets\) to apply loss_fn to"),
    ]
    for model, batches, kw, match in cases:
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(TypeError, match=match):
            find_lr(model, batches, num_iter=10, progress=False, **kw)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batches_that_do_not_fit_the_model_name_their_shape() -> None:
    batches = [(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(RuntimeError, match=r"\(4, 7\)"):
        find_lr(make_model(), batches, num_iter=10, progress=False)


def test_bf16_autocast_runs() -> None:
    result = find_lr(make_model(), make_data(), num_iter=10, end_lr=1e-2, amp="bf16", progress=False)
    assert np.isfinite(result.losses).all()


def test_validation_mode_records_validation_loss() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))   # no running statistics
    val = make_data(2, seed=1)
    result = find_lr(model, make_data(), val_loader=val, num_iter=5, end_lr=1e-5, progress=False)
    model.eval()
    with torch.no_grad():
        expected = np.mean([nn.functional.cross_entropy(model(x), y).item() for x, y in val])
    # at LR <= 1e-5 the weights barely move: the recorded loss is the validation loss
    assert result.losses[0] == pytest.approx(expected, rel=1e-4)
    assert result.config["validation_loss"] is True


def test_repeats_report_every_seed() -> None:
    result = find_lr(make_model(), make_data(), num_iter=20, repeats=3, seed=5, progress=False)
    assert len(result.seed_lrs) == 3 and result.config["seeds"] == [5, 6, 7]


def v_curve(low: int, n: int = 40, fall: float = 1.0) -> list[float]:
    """A loss that falls by ``fall`` to its minimum at step ``low``, then climbs back (without diverging)."""
    return [2.0 - fall * i / low if i <= low else 2.0 - fall + 0.05 * (i - low) for i in range(n)]


def test_a_repeated_test_shows_the_median_repeats_curve_and_keeps_every_one(tmp_path) -> None:
    lows = [10, 30, 20]                      # the third repeat's suggestion is the median
    values = [v for low in lows for v in v_curve(low)]
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, end_lr=1e-2, repeats=3,
                     seed=5, progress=False, warn=False, slow_down=False)
    assert result.curve_index == 2 and result.config["seeds"] == [5, 6, 7]
    assert [np.argmin(x) for x in result.seed_losses] == lows
    assert np.array_equal(result.losses, result.seed_losses[2])
    assert result.seed_lrs[0] < result.seed_lrs[2] < result.seed_lrs[1]
    assert result.suggested_lr == pytest.approx(result.seed_lrs[2], rel=5e-3)      # the curve's own suggestion
    assert result.suggestions["smith"].lr == pytest.approx(result.suggested_lr, rel=5e-3)
    assert "the curve is seed 7's, the median" in result.summary()
    assert [lrs.size for lrs, _, _ in result.other_curves()] == [40, 40]
    ax = result.plot(path=tmp_path / "r.png")
    assert sum(line.get_label() == "other seeds (smoothed)" for line in ax.lines) == 1
    assert len([line for line in ax.lines if line.get_color() == "0.55"]) == 2
    back = RangeTestResult.load(result.to_json(tmp_path / "r.json"))
    assert back.curve_index == 2 and back.suggested_lr == result.suggested_lr
    assert all(np.array_equal(a, b) for a, b in zip(back.seed_losses, result.seed_losses))


def test_a_shown_repeat_that_stopped_early_still_places_the_others_on_the_sweep() -> None:
    short = v_curve(10, 25) + [float("nan")] * 5             # stops at its first NaN (seen at step 30's check)
    values = v_curve(30) + short + v_curve(20)
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, end_lr=1e-2, repeats=3,
                     seed=0, progress=False, warn=False, slow_down=False)
    assert [x.size for x in result.seed_losses] == [40, 26, 40]
    shown = result.seed_losses[result.curve_index]
    assert np.array_equal(result.losses, shown, equal_nan=True)
    sweep = np.geomspace(1e-6, 1e-2, 40)
    for lrs, smoothed, _ in result.other_curves():
        assert np.allclose(lrs, sweep[: lrs.size]) and smoothed.size == lrs.size


def test_repeats_that_disagree_sweep_again_at_half_the_pace(caplog) -> None:
    fast = [v for low in (5, 30, 32) for v in v_curve(low)]            # the first sweep broke down early
    slow = [v for low in (40, 44, 48) for v in v_curve(low, 80)]       # twice the steps: they agree
    result = find_lr(make_model(), make_data(), step_fn=scripted(fast + slow), num_iter=40, end_lr=1e-2, repeats=3,
                     seed=0, progress=False, warn=False)
    assert result.num_iter == 80 and [x.size for x in result.seed_losses] == [80, 80, 80]
    assert not result.repeats_disagree and result.lrs[-1] == pytest.approx(1e-2)
    first = result.config["faster_sweeps"]
    assert first["num_iter"] == 40 and len(first["seed_lrs"]) == 3
    assert max(first["seed_lrs"]) > 3 * min(first["seed_lrs"])
    assert "the 3 sweeps of 40 steps disagree" in caplog.text
    assert "the first 3 sweeps, 40 steps each, disagreed" in result.summary()

    kept = find_lr(make_model(), make_data(), step_fn=scripted(fast), num_iter=40, end_lr=1e-2, repeats=3,
                   seed=0, progress=False, warn=False, slow_down=False)
    assert kept.num_iter == 40 and kept.repeats_disagree and "faster_sweeps" not in kept.config


def test_a_shallow_sweep_is_left_out_of_the_median_without_sweeping_again(tmp_path, caplog) -> None:
    # the first sweep's loss fell a fifth as far as the others' before it rose: it broke down, and its
    # minimum (step 5) is not the cliff; the other two agree
    values = v_curve(5, fall=0.2) + v_curve(30) + v_curve(34)
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, end_lr=1e-2, repeats=3,
                     seed=5, progress=False, warn=False)
    assert result.shallow == [0] and result.num_iter == 40 and "faster_sweeps" not in result.config
    assert "disagree" not in caplog.text and not result.repeats_disagree and result.warnings == []
    both = np.sqrt(result.seed_lrs[1] * result.seed_lrs[2])
    assert result.suggested_lr == pytest.approx(both, rel=5e-3) and result.spread == tuple(result.seed_lrs[1:])
    assert result.curve_index in (1, 2) and result.reason.startswith("median over 2 seeds")
    text = result.summary()
    assert "spread over 2 seeds" in text and "'s, the one nearest the median)" in text
    assert (f"left out of the median: seed 5 ({result.seed_lrs[0]:.3g}), whose loss fell 0.089 where the deepest "
            "sweep's fell 0.91: too little for its minimum to mark the cliff") in text       # smoothed: a bit less than 0.2 and 1
    ax = result.plot(path=tmp_path / "r.png")
    dotted = [line for line in ax.lines if line.get_label() == "too shallow, left out"]
    assert len(dotted) == 1 and dotted[0].get_linestyle() == ":"
    back = RangeTestResult.load(result.to_json(tmp_path / "r.json"))
    assert back.shallow == [0] and back.suggested_lr == result.suggested_lr
    assert json.loads((tmp_path / "r.json").read_text())["shallow"] == [0]


def test_most_sweeps_shallow_count_as_a_disagreement_and_sweep_again() -> None:
    fast = v_curve(5, fall=0.2) + v_curve(30) + v_curve(6, fall=0.25)
    slow = [v for low in (40, 44, 48) for v in v_curve(low, 80)]
    result = find_lr(make_model(), make_data(), step_fn=scripted(fast + slow), num_iter=40, end_lr=1e-2, repeats=3,
                     seed=0, progress=False, warn=False)
    assert result.num_iter == 80 and result.shallow == [] and not result.repeats_disagree
    assert result.config["faster_sweeps"]["shallow"] == [0, 2]
    assert "disagreed (1.09e-06 shallow, " in result.summary()

    kept = find_lr(make_model(), make_data(), step_fn=scripted(fast), num_iter=40, end_lr=1e-2, repeats=3,
                   seed=0, progress=False, warn=False, slow_down=False)
    assert kept.repeats_disagree and kept.shallow == [0, 2]
    assert kept.suggested_lr == pytest.approx(kept.seed_lrs[1], rel=5e-3)    # the one sweep that learned
    assert any("2 of the 3 repeats' losses fell too little to count (most often: they broke down before they could "
                  "learn), which leaves fewer than two to agree; the median" in w for w in kept.warnings)


def test_one_sweep_left_is_too_few_to_agree_but_two_that_agree_are_enough() -> None:
    lrs = np.geomspace(1e-6, 1e-2, 40)
    deep = [np.array(v_curve(30)), np.array(v_curve(32))]
    shallow = [np.array(v_curve(5, fall=0.2)), np.array(v_curve(6, fall=0.15)), np.array(v_curve(7, fall=0.2))]

    def result(curves: list[np.ndarray]) -> RangeTestResult:
        seed_lrs = [RangeTestResult(lrs, c).suggested_lr for c in curves]
        return RangeTestResult(lrs, curves[0], seed_lrs=seed_lrs, seed_losses=curves)

    assert result([deep[0], shallow[0]]).repeats_disagree                    # 2 repeats, 1 left
    two_left = result(deep + shallow)                                        # 5 repeats, 3 shallow
    assert two_left.shallow == [2, 3, 4] and not two_left.repeats_disagree
    assert two_left.suggested_lr == pytest.approx(np.sqrt(two_left.seed_lrs[0] * two_left.seed_lrs[1]), rel=5e-3)


def test_sweeps_that_fall_alike_are_all_counted() -> None:
    from lrfind.rangetest.result import shallow_sweeps

    curves = [np.array(v_curve(low, fall=f)) for low, f in ((20, 1.0), (22, 0.5), (25, 0.8))]
    assert shallow_sweeps(curves) == []
    assert shallow_sweeps(curves + [np.array(v_curve(8, fall=0.25))]) == [3]
    assert shallow_sweeps([np.array([2.0] * 5)] + curves) == []          # too short to say: counted
    flat = [np.full(40, 2.0) + 0.01 * np.sin(np.arange(40)) for _ in range(2)]
    assert shallow_sweeps(flat + [np.array(v_curve(20, fall=0.03))]) == []    # no clear fall to compare with
    flat = RangeTestResult(np.geomspace(1e-4, 1, 40), np.linspace(2.0, 1.0, 40), seed_lrs=[0.01, 0.02])
    assert flat.shallow == [] and flat.suggested_lr is not None           # no curves kept: nothing left out
    odd = RangeTestResult(np.geomspace(1e-6, 1e-2, 40), v_curve(30),
                          seed_losses=[v_curve(30), v_curve(5, fall=0.2)])      # curves without their suggestions
    assert odd.shallow == [] and odd.summary()


def test_median_index_picks_the_middle_suggestion_and_skips_the_unclear() -> None:
    from lrfind.rangetest.result import median_index

    assert median_index([0.006, 0.066, 0.046]) == 2
    assert median_index([None, 0.01, 0.03, 0.02]) == 3          # median of 3 found
    assert median_index([None, None]) == 0
    assert median_index([0.02]) == 0


@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam")])      # lrfind's own step, reset in between
def test_each_repeat_is_the_run_its_seed_alone_would_give(optimizer) -> None:
    repeated = find_lr(make_model(), make_data(), optimizer=optimizer, num_iter=20, repeats=2, seed=3, progress=False,
                       fused=False)
    alone = find_lr(make_model(), make_data(), optimizer=optimizer, num_iter=20, seed=4, progress=False)
    assert np.array_equal(repeated.seed_losses[1], alone.losses)


def test_same_seed_same_curve() -> None:
    a = find_lr(make_model(), make_data(), num_iter=20, seed=1, progress=False)
    b = find_lr(make_model(), make_data(), num_iter=20, seed=1, progress=False)
    assert np.array_equal(a.losses, b.losses)


@pytest.mark.parametrize("bad, match", [
    ({"start_lr": 0.0}, "start_lr"), ({"end_lr": 1e-7}, "end_lr"), ({"num_iter": 1}, "num_iter"),
    ({"mode": "log"}, "mode"), ({"amp": "fp8"}, "amp"), ({"accumulation_steps": 0}, "accumulation_steps"),
    ({"method": "best"}, "method"), ({"nonsense": 1}, "nonsense"),
    ({"start_lr": "1e-5"}, r"start_lr must be a number, got '1e-5' \(str\)"), ({"val_batches": 0}, "val_batches"),
    ({"criterion": nn.MSELoss()}, r"criterion \(did you mean loss_fn\?\)"),     # torch-lr-finder's name
    ({"num_it": 50}, r"num_it \(did you mean num_iter\?\)"),                   # fastai's
    ({"max_lr": 1.0, "num_iters": 5}, r"max_lr \(did you mean end_lr\?\), num_iters \(did you mean num_iter\?\)"),
])
def test_bad_arguments_are_named(bad: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        find_lr(make_model(), make_data(), progress=False, **bad)


def test_sweep_config_object_is_accepted() -> None:
    result = find_lr(make_model(), make_data(), sweep=Sweep(num_iter=12, end_lr=1e-3), progress=False)
    assert len(result.losses) == 12


def test_json_and_csv_round_trip(tmp_path) -> None:
    values = [2.0 - 0.01 * i for i in range(30)] + [float("nan")] * 10
    result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, progress=False)
    back = RangeTestResult.load(result.to_json(tmp_path / "r.json"))
    assert np.array_equal(back.lrs, result.lrs)
    assert np.array_equal(back.losses, result.losses, equal_nan=True)
    assert back.suggested_lr == result.suggested_lr and back.stop_reason == result.stop_reason
    csv_back = RangeTestResult.load(result.to_csv(tmp_path / "r.csv"))
    assert np.array_equal(csv_back.losses, result.losses, equal_nan=True)
    with pytest.raises(ValueError, match=".txt"):
        RangeTestResult.load(tmp_path / "r.txt")


@pytest.mark.parametrize("name, text, message", [
    ("cut.json", '{"lrs": [1e-6, 2', r"is not a range-test JSON file: it is not JSON \(.*\); cut short\?"),
    ("list.json", "[1, 2]", "is not a range-test JSON file: it holds a list, not an object"),
    ("other.csv", "not,a,csv\n1,2,3\n", "is not a range-test CSV file: it needs columns lr and loss"),
    ("header.csv", "iteration,lr,loss,smoothed\n", "holds no iterations, only its header"),
    ("cut.csv", "iteration,lr,loss,smoothed\n0,1e-06,2.3,2.3\n1,2e-06\n", "its row 2 is cut short"),
    ("words.csv", "iteration,lr,loss,smoothed\n0,fast,2.3,2.3\n", "is not a range-test CSV file: could not convert"),
])
def test_a_file_that_is_not_a_whole_range_test_is_a_clear_error(tmp_path, name, text, message) -> None:
    """What `lrfind compare` reads: a CSV of another kind used to load as an empty sweep, a cut row
    as a NaN."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        RangeTestResult.load(path)


def test_a_sweep_that_ends_before_the_loss_turns_up_warns_and_says_so_everywhere(tmp_path) -> None:
    values = [2.0 - 0.03 * i for i in range(40)]            # still falling at end_lr
    with pytest.warns(RangeTestWarning, match="had not turned up by the sweep's last LR") as caught:
        result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, progress=False)
    assert len(caught) == 1 and caught[0].filename == __file__     # points at the caller's line
    assert result.suggested_lr is not None and len(result.warnings) == 1
    assert f"warning: {result.warnings[0]}" in result.summary()
    assert RangeTestResult.load(result.to_json(tmp_path / "r.json")).warnings == result.warnings
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == result.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeTestWarning)
        quiet = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, progress=False, warn=False)
    assert quiet.warnings == result.warnings


def test_no_suggestion_warns_with_the_reason_where_the_caller_would_use_it() -> None:
    """``SGD(lr=result.suggested_lr)`` with None would fail far from the cause: say it at once."""
    values = [2.0 + 0.03 * i for i in range(40)]            # rising from the start
    with pytest.warns(RangeTestWarning, match="no LR suggested: the loss rises from the start") as caught:
        result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, progress=False)
    assert result.suggested_lr is None and caught[0].filename == __file__
    assert f"no LR suggested: {result.reason}" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeTestWarning)
        find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=40, progress=False, warn=False)


def random_label_sweep(n: int = 200, seed: int = 0) -> list[float]:
    """The losses of a small CNN's sweep on a fixed set of random images with random labels, as
    users saw it (LRs 1e-6 to 1 over ``n`` steps): they wander about 3.5, spike to about 3.6 at LR
    0.063, dip at 0.19 and blow up past 0.25; a third of the dip's LR lands on the spike."""
    x = np.linspace(-6.0, 0.0, n)                               # log10 of the LRs
    bump = lambda at, height, width: height * np.exp(-0.5 * ((x - np.log10(at)) / width) ** 2)  # noqa: E731
    rng = np.random.default_rng(seed)
    losses = (3.5 + rng.normal(0, 0.1, n) + bump(0.063, 0.14, 0.12) - bump(0.19, 0.5, 0.1)
              + np.where(x > np.log10(0.25), 15 * (x - np.log10(0.25)) ** 2, 0.0))
    return [float(v) for v in losses]


def test_a_suggestion_on_a_loss_spike_is_none_and_the_warning_says_why() -> None:
    """The random-label sweep got 0.063, on the spike, with no word of it: now no suggestion, the
    reason in ``result.reason``, in the one warning and in ``result.warnings`` alike."""
    values = random_label_sweep()
    with pytest.warns(RangeTestWarning) as caught:
        result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=200, progress=False)
    assert result.stop_reason == "completed" and result.suggested_lr is None
    assert "sits on a rise of the loss" in result.reason and "above where the sweep started" in result.reason
    assert [str(w.message) for w in caught] == result.warnings
    assert result.warnings[0].startswith(f"no LR suggested: {result.reason}")
    assert result.summary().count(result.reason) == 1                      # said once, on its first line


def test_a_nan_loss_from_the_first_step_says_where_to_look_and_warns_what_result_warnings_holds() -> None:
    """A NaN in the inputs makes every loss NaN, at any LR: "run more iterations" was the advice, and
    the warning find_lr gave was missing from ``result.warnings``."""
    data = make_data(2)
    data[0][0][3, 2] = float("nan")
    with pytest.warns(RangeTestWarning) as caught:
        result = find_lr(make_model(), data, num_iter=30, progress=False)
    assert result.stop_reason == "loss became NaN/Inf" and len(result.losses) == 1
    assert result.suggested_lr is None and "run more iterations" not in result.reason
    assert "the loss was NaN from the first step on" in result.reason, result.reason
    assert "more iterations cannot help" in result.reason and "inputs" in result.reason
    assert "initial weights" in result.reason
    assert [str(w.message) for w in caught] == result.warnings == [f"no LR suggested: {result.reason}"]
    assert all(w.filename == __file__ for w in caught)
    assert result.summary().count(result.reason) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeTestWarning)
        quiet = find_lr(make_model(), data, num_iter=30, progress=False, warn=False)
    assert quiet.warnings == result.warnings


def test_a_smaller_last_batch_that_breaks_batch_norm_says_so_and_restores_the_model() -> None:
    """A loader's last batch of one example fails in batch norm at a later step, deep in torch:
    the error names the step, the batch and the fix."""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(33, 10, generator=g), torch.randint(0, 3, (33,), generator=g))
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    before = copy.deepcopy(model.state_dict())
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    with pytest.raises(ValueError, match=r"step 2 failed on a batch of \(\(1, 10\) float32, \(1,\) int64\), smaller than "
                                         r"the first batch's 32 examples: Expected more than 1 value per channel.*"
                                         r"batch norm cannot train on one example\): drop it with "
                                         r"DataLoader\(\.\.\., drop_last=True\)"):
        find_lr(model, loader, num_iter=10, progress=False)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    loader = torch.utils.data.DataLoader(data, batch_size=32, drop_last=True)
    assert len(find_lr(model, loader, num_iter=10, progress=False, warn=False).losses) == 10


def test_a_sweep_stopped_by_divergence_does_not_warn() -> None:
    values = [2.0 - 0.03 * i for i in range(30)] + [1.1 * 2.0 ** i for i in range(30)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeTestWarning)
        result = find_lr(make_model(), make_data(), step_fn=scripted(values), num_iter=60, progress=False)
    assert result.stop_reason.startswith("diverged") and result.warnings == []


def test_repeats_that_disagree_by_more_than_3x_are_a_warning() -> None:
    losses = np.linspace(2.0, 1.0, 40)
    agree = RangeTestResult(np.geomspace(1e-4, 1, 40), losses, seed_lrs=[0.01, 0.02, 0.025])
    assert not any("repeats" in w for w in agree.warnings)
    apart = RangeTestResult(np.geomspace(1e-4, 1, 40), losses, seed_lrs=[0.01, 0.02, 0.05])
    assert any("3 repeats' suggestions span 0.01 to 0.05, 5.0x" in w for w in apart.warnings)


def test_plot_returns_axes_and_saves(tmp_path) -> None:
    import matplotlib.axes

    result = find_lr(make_model(), make_data(), num_iter=30, progress=False)
    assert isinstance(result.plot(), matplotlib.axes.Axes)
    result.plot(path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_a_file_name_where_the_axes_go_is_the_path_and_anything_else_is_a_clear_error(tmp_path) -> None:
    result = find_lr(make_model(), make_data(), num_iter=30, progress=False)
    result.plot(str(tmp_path / "a.png"))                         # what torch-lr-finder's users type
    result.plot(tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000
    with pytest.raises(TypeError, match=r"ax must be a matplotlib Axes .*not int 3"):
        result.plot(3)
    with pytest.raises(TypeError, match="got two files"):
        result.plot("a.png", path="b.png")


def test_a_result_is_one_line_in_a_repl_and_its_plot_in_a_notebook() -> None:
    result = find_lr(make_model(), make_data(), num_iter=30, repeats=2, seed=0, progress=False)
    text = repr(result)
    assert text.startswith("<RangeTestResult: suggested LR ") and "median of 2 sweeps" in text
    assert "30 of 30 iterations" in text and "array(" not in text and "\n" not in text
    assert result._repr_png_().startswith(b"\x89PNG")          # what Jupyter shows for a cell's value


def test_fp16_autocast_with_grad_scaler_runs() -> None:
    result = find_lr(make_model(), make_data(), num_iter=10, end_lr=1e-2, amp="fp16", progress=False)
    assert len(result.losses) == 10 and np.isfinite(result.losses).all()


def test_fp16_gradients_are_unscaled_before_they_are_clipped() -> None:
    """Clipped while still multiplied by the scaler's 65536, they would barely move the weights."""
    kw = dict(num_iter=30, end_lr=1.0, max_grad_norm=0.5, seed=0, progress=False,
              optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=1e-6, momentum=0.9))
    runs = {}
    for amp in ("fp16", None):
        model = make_model()
        runs[amp] = find_lr(model, make_data(n_batches=30), **{**kw, "optimizer": kw["optimizer"](model)}, amp=amp)
    np.testing.assert_allclose(runs["fp16"].losses, runs[None].losses, rtol=0.02, atol=0.02)
    assert runs[None].losses[-5:].mean() < runs[None].losses[:5].mean() - 0.1      # it trained


@pytest.mark.parametrize("make", [
    lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda groups: torch.optim.SGD(groups, lr=0.1),
    lambda groups: torch.optim.Adam(groups, lr=0.1, weight_decay=1e-3),
    lambda groups: torch.optim.AdamW(groups, lr=0.1, weight_decay=1e-2),
], ids=["sgd-nesterov-wd", "sgd-plain", "adam-wd", "adamw"])
def test_graphable_sweep_step_updates_like_torch_optim(make) -> None:
    """The update the range test replays from a CUDA graph is torch's own, group ratios included
    (run eagerly here; tests/test_gpu.py replays it on a GPU)."""
    from lrfind.engine.graph import SweepStep
    from lrfind.engine.optimizer import own_rule

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.05}]  # noqa: E731
    ours, reference = make(groups(model)), make(groups(twin))
    rule, _ = own_rule(ours)
    step = SweepStep(model, rule, ours.param_groups, [1.0, 0.5], nn.functional.cross_entropy, graph=False)
    for lr in np.geomspace(1e-4, 1e-1, 12):
        x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        loss = step(x, y, float(lr))
        for group, ratio in zip(reference.param_groups, (1.0, 0.5)):
            group["lr"] = float(lr) * ratio
        reference.zero_grad()
        expected = nn.functional.cross_entropy(twin(x), y)
        expected.backward()
        reference.step()
        torch.testing.assert_close(loss, expected.detach())
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("config", [
    OptimizerConfig("sgd", momentum=0.9, nesterov=True, weight_decay=1e-3),
    OptimizerConfig("sgd", momentum=0.0),
    OptimizerConfig("adamw", weight_decay=1e-2),
], ids=["sgd-nesterov-wd", "sgd-plain", "adamw"])
def test_an_optimizer_config_sweeps_like_the_torch_optimizer_it_describes(config: OptimizerConfig) -> None:
    """Given as a config, the optimizer is lrfind's own step (no torch.optim object); the curve is
    torch's. With a step_fn the config's torch optimizer is built and stepped instead."""
    data = make_data(n_batches=30)
    model = make_model()
    ours = find_lr(model, data, optimizer=config, num_iter=30, end_lr=0.3, seed=0, progress=False)
    twin = make_model()
    theirs = find_lr(twin, data, optimizer=config.torch_optimizer(twin.parameters(), 1e-6), num_iter=30,
                     end_lr=0.3, seed=0, progress=False)
    np.testing.assert_allclose(ours.losses, theirs.losses, rtol=1e-4, atol=1e-6)
    stepped = find_lr(make_model(), data, optimizer=config, num_iter=30, end_lr=0.3, seed=0, progress=False,
                      step_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))
    np.testing.assert_allclose(stepped.losses, theirs.losses, rtol=1e-4, atol=1e-6)
    for a, b in zip(model.state_dict().values(), make_model().state_dict().values()):
        assert torch.equal(a, b)                # restored, as with a torch optimizer


def test_the_default_sweep_does_not_import_torch_dynamo() -> None:
    """A torch.optim optimizer imports torch._dynamo when created (1-2 s, longer than a GPU's
    sweep); find_lr's default optimizer is lrfind's own SGD step."""
    assert dynamo_modules_after("""
import torch
from lrfind import find_lr
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
data = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(4)]
assert len(find_lr(model, data, num_iter=8, progress=False).losses) == 8
""") == []


def test_an_optimizer_of_the_wrong_kind_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="optimizer must be a torch.optim optimizer or an lrfind OptimizerConfig, "
                                        "got int"):
        find_lr(make_model(), make_data(), optimizer=3, progress=False)


def test_a_loss_fn_that_does_not_average_is_a_clear_error() -> None:
    for optimizer in (None, lambda m: torch.optim.SGD(m.parameters(), lr=0.1)):     # lrfind's step, torch's
        model = make_model()
        with pytest.raises(TypeError, match=r"loss_fn returned \(16,\), not a scalar loss: .*reduction='mean'"):
            find_lr(model, make_data(), loss_fn=nn.CrossEntropyLoss(reduction="none"),
                    optimizer=optimizer and optimizer(model), num_iter=10, progress=False)


def test_a_model_on_the_meta_device_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="on the meta device, without values"):
        find_lr(make_model().to("meta"), make_data(), num_iter=10, progress=False)


def test_a_model_with_nothing_to_train_is_a_clear_error() -> None:
    model = make_model().requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        find_lr(model, make_data(), progress=False)


def test_cuda_graph_on_a_cpu_model_is_a_clear_error() -> None:
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="cuda_graph=True cannot be used here: the parameters are not all on a CUDA"):
        find_lr(model, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))], num_iter=5, cuda_graph=True, progress=False)


def test_a_step_that_cannot_be_captured_runs_eagerly(monkeypatch, caplog) -> None:
    """CapturedStep's fallback, with the CUDA calls replaced: a capture that fails (as a host sync
    inside the step makes it fail) leaves the step eager, with a warning; strict raises."""
    from lrfind.engine import graph as _graph

    class FailingCapture:
        def __init__(self, graph):
            pass

        def __enter__(self):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\n(details)")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_graph.torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(_graph.torch.cuda, "graph", FailingCapture)
    monkeypatch.setattr(_graph.torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(_graph.torch.cuda, "device", lambda device: contextlib.nullcontext())
    calls = []
    step = _graph.CapturedStep(lambda x: calls.append(x.clone()) or 2 * x, warmup=1)
    with caplog.at_level("WARNING", logger="lrfind.engine.graph"):
        outs = [step(torch.full((2,), float(i))) for i in range(4)]
    assert [float(o[0]) for o in outs] == [0.0, 2.0, 4.0, 6.0] and len(calls) == 4   # every step ran once
    assert step.failure == "CUDA error: operation not permitted when stream is capturing"
    assert "could not be captured in a CUDA graph" in caplog.text
    strict = _graph.CapturedStep(lambda x: x, warmup=0, strict=True)
    with pytest.raises(RuntimeError, match="operation not permitted"):
        strict(torch.zeros(2))


def test_an_empty_capture_counts_its_one_run_and_steps_eagerly_after(monkeypatch, caplog) -> None:
    """A step whose kernels went to another GPU or stream than the capture's ran there and then,
    once, and left an empty graph (torch warns): its output is the step's, and the steps after run
    eagerly instead of replaying nothing. The capture ran with the inputs' GPU made the current one."""
    from lrfind.engine import graph as _graph

    current = []

    class EmptyCapture:
        def __init__(self, graph):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            warnings.warn("The CUDA Graph is empty. This usually means that the graph was attempted to be "
                          "captured on wrong device or stream.", UserWarning)
            warnings.warn("something of the model's own", DeprecationWarning)
            return False

    monkeypatch.setattr(_graph.torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(_graph.torch.cuda, "graph", EmptyCapture)
    monkeypatch.setattr(_graph.torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(_graph.torch.cuda, "device", lambda device: current.append(device) or contextlib.nullcontext())
    calls = []
    step = _graph.CapturedStep(lambda x: calls.append(x.clone()) or 2 * x, warmup=1)
    with caplog.at_level("WARNING", logger="lrfind.engine.graph"), pytest.warns(DeprecationWarning, match="model's own"):
        outs = [step(torch.full((2,), float(i))) for i in range(4)]
    assert [float(o[0]) for o in outs] == [0.0, 2.0, 4.0, 6.0] and len(calls) == 4   # every step ran once
    assert step.graph is None and "the graph came out empty" in step.failure
    assert "could not be captured in a CUDA graph" in caplog.text
    assert current == [torch.device("cpu")]                 # the inputs' device, made the current one
    strict = _graph.CapturedStep(lambda x: x, warmup=0, strict=True)
    with pytest.raises(RuntimeError, match="the graph came out empty"), pytest.warns(DeprecationWarning):
        strict(torch.zeros(2))


@pytest.mark.parametrize("fields, match", [
    ({"name": "rmsprop"}, "optimizer must be 'sgd', 'adam' or 'adamw', got 'rmsprop'"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
    ({"name": "adam", "nesterov": True}, "nesterov needs optimizer 'sgd' with momentum > 0"),
    ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0, got -0.1"),
    ({"name": "adam", "betas": (0.9, 1.5)}, r"betas must be two numbers in \[0, 1\), got \(0.9, 1.5\)"),
    ({"name": "adam", "eps": 0.0}, "eps must be > 0, got 0.0"),
])
def test_an_impossible_optimizer_config_names_the_field(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OptimizerConfig(**fields)


@pytest.mark.parametrize("config", [OptimizerConfig("sgd", momentum=0.9), OptimizerConfig("adamw")],
                         ids=["sgd", "adamw"])
def test_clipped_gradients_sweep_as_torch_clip_grad_norm_does(config: OptimizerConfig) -> None:
    data = make_data(n_batches=30)
    kw = dict(num_iter=30, end_lr=0.3, seed=0, progress=False, max_grad_norm=0.05)
    ours = find_lr(make_model(), data, optimizer=config, **kw)             # lrfind's step, clipped on the device
    twin = make_model()
    theirs = find_lr(twin, data, optimizer=config.torch_optimizer(twin.parameters(), 1e-6), **kw)
    np.testing.assert_allclose(ours.losses, theirs.losses, rtol=1e-4, atol=1e-6)
    unclipped = find_lr(make_model(), data, optimizer=config, **{**kw, "max_grad_norm": None})
    assert not np.allclose(ours.losses, unclipped.losses, rtol=1e-3)
    assert ours.config["max_grad_norm"] == 0.05 and unclipped.config["max_grad_norm"] is None


def test_the_eager_step_clips_where_a_training_loop_would() -> None:
    """Between backward and the optimizer's step, over every parameter the optimizer holds."""
    data = make_data(n_batches=20)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    result = find_lr(model, data, optimizer=torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9),
                     max_grad_norm=0.1, num_iter=20, end_lr=0.5, progress=False)
    optimizer = torch.optim.SGD(twin.parameters(), lr=1e-6, momentum=0.9)
    expected = []
    for lr, (x, y) in zip(result.lrs, data):
        optimizer.param_groups[0]["lr"] = lr
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(twin(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(twin.parameters(), 0.1)
        optimizer.step()
        expected.append(loss.item())
    np.testing.assert_allclose(result.losses, expected, rtol=1e-6)


def test_clipping_lets_the_sweep_climb_further_before_it_diverges() -> None:
    kw = dict(num_iter=200, start_lr=1e-3, end_lr=1e4, progress=False)
    unclipped = find_lr(make_model(), make_data(), **kw)
    clipped = find_lr(make_model(), make_data(), max_grad_norm=1e-3, **kw)
    assert len(clipped.losses) > len(unclipped.losses)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "1", True])
def test_a_bad_max_grad_norm_is_named(bad) -> None:
    with pytest.raises(ValueError, match=f"max_grad_norm must be a positive finite number, got {bad!r}"):
        find_lr(make_model(), make_data(), max_grad_norm=bad, progress=False)


def test_a_frozen_base_is_not_copied_and_the_rest_is_restored() -> None:
    """A LoRA-style fine-tune: the frozen base stays where it is (not snapshotted: no step can move
    it), the trainable head and a frozen parameter with a stale .grad are put back exactly."""
    from lrfind.rangetest import state as _state

    model = make_model()
    base, head = model[0], model[4]
    base.weight.requires_grad_(False)
    base.bias.requires_grad_(False)
    base.bias.grad = torch.ones_like(base.bias)           # frozen, but a torch optimizer would step it
    snapshot = _state.take(model, None)
    assert all(t is not base.weight for t in snapshot.tensors)
    assert any(t is base.bias for t in snapshot.tensors) and any(t is head.weight for t in snapshot.tensors)
    before = copy.deepcopy(model.state_dict())
    for optimizer in (None, torch.optim.SGD([p for p in model.parameters()], lr=0.1)):
        find_lr(model, make_data(), optimizer=optimizer, num_iter=20, end_lr=10.0, progress=False, warn=False)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert torch.equal(base.bias.grad, torch.ones_like(base.bias))


def test_one_output_per_example_with_the_default_cross_entropy_is_a_clear_error() -> None:
    """Cross-entropy over a single class is 0 whatever the weights: a regression or a yes/no label
    with one logit needs its own loss_fn, and the sweep says so instead of a flat curve."""
    data = [(x, x.sum(1, keepdim=True)) for x, _ in make_data()]
    for optimizer in (None, lambda m: torch.optim.SGD(m.parameters(), lr=0.1)):     # lrfind's step, torch's
        model = nn.Linear(10, 1)
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(ValueError, match=r"returns one value per example \(\(16, 1\) float32\).*"
                                             r"loss_fn=nn.MSELoss\(\) for a regression"):
            find_lr(model, data, optimizer=optimizer and optimizer(model), num_iter=10, progress=False)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = find_lr(nn.Linear(10, 1), data, loss_fn=nn.MSELoss(), num_iter=100, progress=False, warn=False)
    assert result.suggested_lr is not None


class LightningModule(nn.Module):
    """Stands in for lightning's class, which find_lr recognises by name (Lightning is not a dependency)."""


class LitClassifier(LightningModule):
    def __init__(self, configured) -> None:
        super().__init__()
        self.net, self.configured, self.batch_indices = make_model(), configured, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a Lightning module is swept through training_step")

    def training_step(self, batch, batch_idx):
        self.batch_indices.append(batch_idx)
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        warnings.warn("You are trying to `self.log()` but the `self.trainer` reference is not registered on the "
                      "model yet.")                           # what Lightning's self.log says without a Trainer
        return {"loss": loss}

    def configure_optimizers(self):
        return self.configured(self)


@pytest.mark.parametrize("form", ["optimizer", "dict", "lists"])
def test_a_lightning_module_is_swept_through_its_training_step_and_its_optimizer(form: str) -> None:
    def configured(module):
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.StepLR(opt, 10)
        return {"optimizer": opt, "dict": {"optimizer": opt, "lr_scheduler": sched}, "lists": ([opt], [sched])}[form]

    model = LitClassifier(configured)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # Lightning's self.log warning is silenced
        result = find_lr(model, make_data(), num_iter=20, seed=0, progress=False, warn=False)
    plain = make_model()
    expected = find_lr(plain, make_data(), optimizer=torch.optim.Adam(plain.parameters(), lr=1e-3), num_iter=20,
                       seed=0, progress=False, warn=False)
    np.testing.assert_allclose(result.losses, expected.losses, rtol=1e-6)
    assert result.config["optimizer"] == "Adam"
    assert model.batch_indices == list(range(20))              # counted as Lightning counts an epoch's
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.batch_indices.clear()
    find_lr(model, make_data(), num_iter=20, repeats=2, seed=0, progress=False, warn=False, slow_down=False)
    assert model.batch_indices == list(range(20)) * 2           # each repeated sweep from 0, as an epoch


def test_a_lightning_module_with_two_optimizers_or_no_loss_says_what_to_pass() -> None:
    two = LitClassifier(lambda m: [torch.optim.SGD(m.parameters(), lr=0.1), torch.optim.Adam(m.parameters())])
    with pytest.raises(ValueError, match=r"configure_optimizers\(\) gave SGD, Adam; find_lr sweeps one optimizer"):
        find_lr(two, make_data(), num_iter=10, progress=False)
    assert len(find_lr(two, make_data(), optimizer=OptimizerConfig("sgd"), num_iter=10, progress=False,
                       warn=False).losses) == 10

    def needs_a_trainer(module):
        raise RuntimeError(f"{type(module).__name__} is not attached to a `Trainer`")

    with pytest.raises(RuntimeError, match=r"configure_optimizers\(\) failed outside a Trainer \(RuntimeError: "
                                           r"LitClassifier is not attached.*pass optimizer="):
        find_lr(LitClassifier(needs_a_trainer), make_data(), num_iter=10, progress=False)

    class AsksTheTrainer(LitClassifier):
        def training_step(self, batch, batch_idx):
            raise RuntimeError(f"{type(self).__name__} is not attached to a `Trainer`.")    # Lightning's words

    with pytest.raises(RuntimeError, match=r"^training_step needs a Trainer \(AsksTheTrainer is not attached.*"
                                           r"pass step_fn=lambda model, batch"):
        find_lr(AsksTheTrainer(lambda m: torch.optim.SGD(m.parameters(), lr=0.1)), make_data(), num_iter=10,
                progress=False)

    class Manual(LitClassifier):
        def training_step(self, batch, batch_idx):
            return None                              # manual optimization returns nothing

    with pytest.raises(TypeError, match="training_step returned NoneType, not the loss"):
        find_lr(Manual(lambda m: torch.optim.SGD(m.parameters(), lr=0.1)), make_data(), num_iter=10, progress=False)


def test_a_dataset_or_a_data_module_as_the_loader_says_what_to_pass() -> None:
    """A Dataset yields single examples (a sweep of unbatched steps would even run); a data module
    or anything else that is not iterable yields nothing."""
    class DataModule:
        def train_dataloader(self):
            return make_data()

    x = torch.randn(32, 10)
    dataset = torch.utils.data.TensorDataset(x, x[:, :3].argmax(1))
    with pytest.raises(TypeError, match=r"loader is a TensorDataset, a Dataset of single examples.*"
                                        r"DataLoader\(dataset"):
        find_lr(make_model(), dataset, num_iter=10, progress=False)
    with pytest.raises(TypeError, match=r"loader must be an iterable of batches .*got DataModule; "
                                        r".*dm.train_dataloader"):
        find_lr(make_model(), DataModule(), num_iter=10, progress=False)
    with pytest.raises(TypeError, match=r"val_loader must be an iterable of batches .*dm.val_dataloader"):
        find_lr(make_model(), make_data(), val_loader=DataModule(), num_iter=10, progress=False)


def test_an_optimizer_class_name_or_of_another_model_and_a_non_module_say_what_to_pass() -> None:
    model, other = make_model(), make_model()
    cases = [({"optimizer": torch.optim.SGD}, TypeError, r"optimizer is the class SGD, not an optimizer: pass "
                                                         r"SGD\(model.parameters\(\), lr=...\)"),
             ({"optimizer": "adam"}, TypeError, r"optimizer='adam' is a name: pass OptimizerConfig\('adam'\)"),
             ({"optimizer": torch.optim.SGD(other.parameters(), lr=0.1)}, ValueError,
              r"the optimizer holds none of the model's parameters .*make it from model.parameters\(\)"),
             ({"optimizer": torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), 10)},
              TypeError, r"optimizer is a StepLR, an LR scheduler: pass the optimizer it drives \(its .optimizer\)"),
             ({"optimizer": torch.optim.LBFGS(model.parameters())}, TypeError,
              r"LBFGS.step needs a closure .* a range test steps once per batch .*line_search_fn='strong_wolfe'"),
             ({"optimizer": torch.optim.Rprop(model.parameters())}, ValueError,
              r"Rprop reads lr once, as every weight's first step size.* the LRs a range test sets after its first "
              r"step change nothing")]
    for kw, kind, match in cases:
        with pytest.raises(kind, match=match):
            find_lr(model, make_data(), num_iter=10, progress=False, **kw)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        find_lr(lambda x: x, make_data(), num_iter=10, progress=False)


def test_batches_of_numpy_arrays_are_swept_as_tensors() -> None:
    """A list of NumPy batches works as a DataLoader over NumPy data does (its collation makes tensors)."""
    batches = [(x.numpy(), y.numpy()) for x, y in make_data()]
    from_numpy = find_lr(make_model(), batches, num_iter=10, progress=False, seed=0, warn=False)
    from_tensors = find_lr(make_model(), make_data(), num_iter=10, progress=False, seed=0, warn=False)
    np.testing.assert_array_equal(from_numpy.losses, from_tensors.losses)


def test_apply_to_a_lightning_module_sets_what_its_configure_optimizers_reads() -> None:
    """As Lightning's own finder: an lr or learning_rate attribute, else that key of hparams."""
    result = find_lr(make_model(), make_data(), num_iter=100, seed=0, progress=False, warn=False)
    with_lr = LitClassifier(lambda m: torch.optim.SGD(m.parameters(), lr=m.lr))
    with_lr.lr = 1e-3
    assert result.apply(with_lr) == result.suggested_lr and with_lr.lr == result.suggested_lr
    assert with_lr.configure_optimizers().param_groups[0]["lr"] == result.suggested_lr
    in_hparams = LitClassifier(lambda m: None)
    in_hparams.hparams = {"learning_rate": 1e-3, "batch_size": 32}
    result.apply(in_hparams, lr=0.02)
    assert in_hparams.hparams == {"learning_rate": 0.02, "batch_size": 32}
    with pytest.raises(AttributeError, match=r"LitClassifier has no lr or learning_rate .*self.lr = lr in __init__"):
        result.apply(LitClassifier(lambda m: None))


@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam")], ids=["sgd", "adam"])
def test_on_a_device_without_float64_the_own_step_makes_no_double(optimizer, without_float64) -> None:
    """Apple's MPS has no float64: a model there is swept with a float32 step count."""
    data = make_data(n_batches=20)
    with without_float64:
        single = find_lr(make_model(), data, optimizer=optimizer, num_iter=20, end_lr=0.1, seed=0, progress=False)
    assert without_float64.makers == []
    with pytest.MonkeyPatch.context() as m:
        m.setattr("lrfind._device.NO_FLOAT64", set())
        double = find_lr(make_model(), data, optimizer=optimizer, num_iter=20, end_lr=0.1, seed=0, progress=False)
    np.testing.assert_allclose(single.losses, double.losses, rtol=1e-4)


def test_a_seed_gives_the_same_sweeps_through_a_dataloader_with_persistent_workers() -> None:
    """Such a loader draws one random number more on its first iter() than on the next ones: its
    first sweep used to take another batch order than the same seed gave it later (fastai#3295's
    complaint, 'a different result each run')."""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(256, 10, generator=g), torch.randint(0, 3, (256,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, num_workers=1, persistent_workers=True)
    model = nn.Linear(10, 3)
    kw = dict(num_iter=12, repeats=2, seed=0, progress=False, warn=False)
    first, second = find_lr(model, loader, **kw), find_lr(model, loader, **kw)
    for a, b in zip(first.seed_losses, second.seed_losses):
        np.testing.assert_array_equal(a, b)
