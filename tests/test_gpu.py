"""On a CUDA device: the graph-captured engine equals the eager one and torch.optim. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import copies_fit, dynamo_modules_after, fully_shard, vmap_imports_dynamo
from lrfind import find_lr, get_model
from lrfind.study import trials as _study
from lrfind._device import exact_float32
from lrfind.engine.trials import FusedTrials, OptimizerConfig, TrialSpec
from test_train import BASE_LR, PER_EPOCH, SPECS, STEPS, base_lr, batches, train_alone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def on_cuda(data):
    return [(x.to(CUDA), y.to(CUDA)) for x, y in data]


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 matrix products would differ from the CPU reference by about 1e-3."""
    with exact_float32():
        yield


@pytest.mark.parametrize("opt_cfg", [OptimizerConfig("sgd", momentum=0.9, nesterov=True, weight_decay=5e-4),
                                     OptimizerConfig("adamw", weight_decay=1e-2)], ids=["sgd-nesterov", "adamw"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_graph_replay_equals_torch_optim_one_by_one(opt_cfg: OptimizerConfig, vectorize: bool) -> None:
    data = batches()
    fused = FusedTrials("lenet", SPECS, base_lr=base_lr(opt_cfg), total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                        optimizer=opt_cfg, device=CUDA, vectorize=vectorize)
    assert fused.cuda_graph
    lrs = []
    for x, y in on_cuda(data):
        lrs.append(fused.current_lrs().tolist())
        fused.step(x, y)
    assert fused._graph is not None and fused._graph.graph is not None, "the step was never captured"
    for k, spec in enumerate(SPECS):
        weights, expected_lrs = train_alone(spec, opt_cfg, data)
        np.testing.assert_allclose(np.array(lrs)[:, k], expected_lrs, rtol=1e-6)
        got = fused.state_dict(k)
        for name, value in weights.items():
            torch.testing.assert_close(got[name].cpu(), value, atol=1e-5, rtol=1e-5, msg=f"{spec.schedule} {name}")


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
@pytest.mark.parametrize("layout", ["channels-last", "clipped"])
def test_channels_last_weights_and_clipped_gradients_replay_from_a_graph_and_equal_torch_optim(
        vectorize: bool, layout: str) -> None:
    """Channels-last: off by default on a GPU (not yet measured there); asked for, it trains the
    same. Clipped: each trial's norm taken on the device, inside the graph."""
    opt_cfg, data = OptimizerConfig("sgd", momentum=0.9), batches()
    clip = 0.05 if layout == "clipped" else None
    fused = FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                        optimizer=opt_cfg, device=CUDA, vectorize=vectorize, channels_last=clip is None,
                        max_grad_norm=clip)
    assert fused.mode.channels_last == (clip is None) and fused.cuda_graph
    for x, y in on_cuda(data):
        fused.step(x, y)
    assert fused._graph is not None and fused._graph.graph is not None, "the step was never captured"
    for k, spec in enumerate(SPECS):
        weights, _ = train_alone(spec, opt_cfg, data, max_grad_norm=clip)
        for name, value in weights.items():
            torch.testing.assert_close(fused.state_dict(k)[name].cpu(), value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model", ["lenet", "batch-norm"])
def test_trials_folded_into_the_channels_replay_from_a_graph_as_vmap_trains_them(model: str) -> None:
    """With TF32 on, as a study runs: the first step's check must keep the trials folded."""
    from test_folded import BatchNormNet

    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):     # the settings the fixture restores
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    make = "lenet" if model == "lenet" else BatchNormNet
    data = [(x.expand(-1, 1 if model == "lenet" else 3, -1, -1).contiguous(), y) for x, y in on_cuda(batches())]
    engines = [FusedTrials(make, SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH, device=CUDA,
                           fold=fold) for fold in (True, False)]
    for x, y in data:
        for engine in engines:
            engine.step(x, y)
    folded, whole = engines
    assert folded.mode.forward == "folded" and whole.mode.forward == "vmapped" and folded._graph.graph is not None
    torch.testing.assert_close(folded.flat, whole.flat, atol=1e-3, rtol=1e-3)


def test_graph_survives_dropping_trials_and_a_failed_trial() -> None:
    data = on_cuda(batches())
    specs = SPECS + [TrialSpec("constant", {}, seed=9, lr_scale=1e6)]         # diverges to NaN
    runs = {}
    for graph in (False, True):
        fused = FusedTrials("lenet", specs, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                            device=CUDA, cuda_graph=graph)
        for i, (x, y) in enumerate(data):
            fused.step(x, y)
            if i == PER_EPOCH - 1:
                fused.end_epoch(None, PER_EPOCH)
                fused.keep([k != 1 for k in fused.running])                  # trial 1 is pruned
        fused.end_epoch(None, PER_EPOCH)
        runs[graph] = fused
    eager, graphed = runs[False], runs[True]
    bad = len(SPECS)
    kept = [k for k in range(len(specs)) if k != 1]
    assert graphed.running == eager.running == kept
    assert [r.status for r in graphed.records] == [r.status for r in eager.records]
    assert graphed.records[bad].status == "failed" and graphed.records[bad].failed_at == eager.records[bad].failed_at
    for k in kept[:-1]:                             # the momentum-cycling trials among them
        for name, value in eager.state_dict(k).items():
            torch.testing.assert_close(graphed.state_dict(k)[name], value, atol=1e-6, rtol=1e-6)


def test_an_engine_and_its_cuda_graph_are_freed_when_its_last_reference_goes() -> None:
    import gc
    import weakref

    engine = FusedTrials("lenet", SPECS[:3], base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                         device=CUDA, cuda_graph=True)
    gc.disable()
    try:
        for x, y in on_cuda(batches()):
            engine.step(x, y)
        assert engine._graph.graph is not None                      # captured and replayed
        ref = weakref.ref(engine)
        del engine
        assert ref() is None
    finally:
        gc.enable()


def test_range_test_runs_on_cuda_and_restores_the_model() -> None:
    model = get_model("lenet", seed=0).to(CUDA)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(model, on_cuda(batches(40, size=32)), num_iter=40, progress=False)
    assert len(result.losses) > 10
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=1e-6, momentum=0.9, nesterov=True, weight_decay=1e-4),
                                  lambda p: torch.optim.AdamW(p, lr=1e-6, weight_decay=1e-2)], ids=["sgd", "adamw"])
def test_range_test_from_a_graph_equals_the_eager_sweep(make) -> None:
    data = on_cuda(batches(60, size=64))
    results = {}
    for graph in (True, False):
        model = get_model("lenet", seed=0).to(CUDA)
        results[graph] = find_lr(model, data, optimizer=make(model.parameters()), num_iter=60, end_lr=0.3,
                                 cuda_graph=graph, repeats=1, progress=False)
    assert results[True].config["cuda_graph"] and not results[False].config["cuda_graph"]
    n = min(len(results[True].losses), len(results[False].losses))
    assert n > 30
    np.testing.assert_allclose(results[True].losses[:30], results[False].losses[:30], rtol=1e-4)
    assert results[True].suggested_lr == pytest.approx(results[False].suggested_lr, rel=0.05)


def test_sweeps_side_by_side_on_cuda_are_the_repeats_one_after_another() -> None:
    """The default on a GPU: 3 copies vmapped in one pass (from a CUDA graph), each reading the
    loader as the repeat with its seed does, give the curves of the repeats one after another."""
    from lrfind.data import ImageData

    x = torch.cat([x for x, _ in batches(60, size=64)]).to(CUDA)
    y = torch.cat([y for _, y in batches(60, size=64)]).to(CUDA)
    kw = dict(num_iter=60, end_lr=0.3, seed=0, slow_down=False, progress=False, warn=False)
    side = find_lr(get_model("lenet", seed=0).to(CUDA), ImageData(x, y).loader(64, seed=0), **kw)   # the defaults
    alone = find_lr(get_model("lenet", seed=0).to(CUDA), ImageData(x, y).loader(64, seed=0), repeats=3, fused=False,
                    **kw)
    assert side.config["how"] == "3 side by side in one pass" and side.config["cuda_graph"]
    assert len(side.seed_losses) == len(alone.seed_losses) == 3
    for a, b in zip(side.seed_losses, alone.seed_losses):
        np.testing.assert_allclose(a[:30], b[:30], rtol=1e-3)


def test_the_default_sweeps_once_where_three_copies_do_not_fit(monkeypatch) -> None:
    copies_fit(monkeypatch, 2)                  # a GPU whose memory holds two copies of the model
    model = get_model("lenet", seed=0).to(CUDA)
    result = find_lr(model, on_cuda(batches(40, size=32)), num_iter=40, progress=False, warn=False)
    assert result.config["how"] == "1 sweep by default: 3 copies of the model do not fit in GPU memory side by side"
    with pytest.raises(ValueError, match="repeats 3: 3 copies of the model side by side do not fit in GPU memory; "
                                         "at most 2 do"):
        find_lr(model, on_cuda(batches(40, size=32)), num_iter=40, repeats=3, progress=False)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_model_on_another_gpu_than_the_current_one_replays_its_own_graph() -> None:
    """A capture on the current GPU's stream would record nothing of a model on another GPU (its
    kernels run there at once) and replay nothing: the sweep must equal its eager twin there."""
    other = torch.device("cuda", torch.cuda.device_count() - 1)
    data = [(x.to(other), y.to(other)) for x, y in batches(40, size=64)]
    results = {}
    with torch.cuda.device(0):
        for graph in (True, False):
            model = get_model("lenet", seed=0).to(other)
            results[graph] = find_lr(model, data, num_iter=40, end_lr=0.3, cuda_graph=graph, progress=False)
    assert results[True].config["cuda_graph"]
    np.testing.assert_allclose(results[True].losses[:30], results[False].losses[:30], rtol=1e-4)


def test_a_step_that_leaves_the_graph_empty_runs_eagerly_once_per_call(caplog) -> None:
    """Work outside the capturing stream (here on the host) leaves an empty graph; every call still
    runs the step once, and the failure says why."""
    from lrfind.engine.graph import CapturedStep

    calls = []
    step = CapturedStep(lambda x: calls.append(1) or torch.ones(2), warmup=1)
    with caplog.at_level("WARNING", logger="lrfind.engine.graph"):
        for _ in range(4):
            step(torch.zeros(2, device=CUDA))
    assert len(calls) == 4 and step.graph is None and "the graph came out empty" in step.failure
    assert "could not be captured in a CUDA graph" in caplog.text


class _SyncsInForward(torch.nn.Module):
    """A model whose forward reads a value on the host: CUDA graphs cannot record that."""

    def __init__(self) -> None:
        super().__init__()
        self.net = get_model("lenet", seed=0)

    def forward(self, x):
        if x.abs().max().item() > 1e9:
            raise AssertionError("unreachable")
        return self.net(x)


def test_a_model_that_syncs_falls_back_to_eager_steps(caplog) -> None:
    data = on_cuda(batches(30, size=32))
    with caplog.at_level("WARNING", logger="lrfind.engine.graph"):
        result = find_lr(_SyncsInForward().to(CUDA), data, num_iter=30, progress=False)
    assert len(result.losses) == 30 and np.isfinite(result.losses).all()
    assert "could not be captured in a CUDA graph" in caplog.text and not result.config["cuda_graph"]
    with pytest.raises(RuntimeError):
        find_lr(_SyncsInForward().to(CUDA), data, num_iter=30, progress=False, cuda_graph=True)


class _ReadsItsWeights(torch.nn.Module):
    """A forward that reads a weight's value: vmap cannot batch it (nor a CUDA graph capture it)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = get_model("lenet", seed=0)

    def forward(self, x):
        scale = 2.0 if self.net.fc3.weight.sum().item() > 1e9 else 1.0
        return self.net(x) * scale


def test_the_engine_trains_a_model_vmap_cannot_batch_trial_after_trial(caplog) -> None:
    engine = FusedTrials(_ReadsItsWeights, SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                         device=CUDA)
    before = engine.flat.clone()
    with caplog.at_level("WARNING", logger="lrfind"):
        for x, y in on_cuda(batches()):
            engine.step(x, y)
    assert not engine.vectorize and "cannot be batched with vmap" in caplog.text
    assert torch.isfinite(engine.flat).all() and not torch.equal(engine.flat, before)


def test_a_study_on_cuda_draws_its_figures_in_a_child_process(mnist_root, tmp_path, monkeypatch) -> None:
    from lrfind import tune
    from lrfind.study import tune as tuner
    from lrfind.study.painter import Painter

    painters = []

    class Recorded(Painter):
        def __init__(self, process: bool) -> None:
            super().__init__(process=process)
            painters.append(self)

    monkeypatch.setattr(tuner, "Painter", Recorded)
    out = tmp_path / "run"
    tune(trials=4, epochs=2, parallel=4, batch_size=64, train_subset=512, device="cuda", progress=False,
         data_dir=str(mnist_root), out=str(out), range_test_iters=100, final_seeds=1)
    assert painters[0]._count == 2                     # the range test's figure and the report's, by the child
    for name in ("range_test.png", "history.png", "lr_curves.png", "val_acc.png", "importances.png"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.parametrize("max_grad_norm", [None, 0.5], ids=["unclipped", "clipped"])
def test_a_sweep_given_an_optimizer_config_replays_from_a_graph_like_torch_optim(max_grad_norm) -> None:
    data = on_cuda(batches(60, size=64))
    config = OptimizerConfig("sgd", momentum=0.9, nesterov=True, weight_decay=1e-4)
    ours = find_lr(get_model("lenet", seed=0).to(CUDA), data, optimizer=config, num_iter=60, end_lr=0.3,
                   max_grad_norm=max_grad_norm, progress=False)
    model = get_model("lenet", seed=0).to(CUDA)
    theirs = find_lr(model, data, optimizer=config.torch_optimizer(model.parameters(), 1e-6), num_iter=60,
                     end_lr=0.3, max_grad_norm=max_grad_norm, cuda_graph=False, progress=False)
    assert ours.config["cuda_graph"] and not theirs.config["cuda_graph"]
    np.testing.assert_allclose(ours.losses[:30], theirs.losses[:30], rtol=1e-4)


def test_a_repeated_sweep_replays_one_graph_from_an_empty_optimizer_state() -> None:
    data = on_cuda(batches(60, size=64))          # a list: every repeat sees the same batches in the same order
    result = find_lr(get_model("lenet", seed=0).to(CUDA), data, optimizer=OptimizerConfig("adam"), num_iter=60,
                     end_lr=0.3, repeats=2, seed=0, progress=False)
    assert result.config["cuda_graph"]
    np.testing.assert_allclose(result.seed_losses[1][:30], result.seed_losses[0][:30], rtol=1e-4)


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="needs NCCL")
@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_a_model_of_many_processes_on_cuda_sweeps_eagerly_through_nccl_like_the_plain_model(tmp_path, kind) -> None:
    """One process (world size 1): the path of DDP and fully_shard models (a torch optimizer, no
    graph) on CUDA, equal to the plain model's eager sweep; tests/test_ddp_fsdp.py runs two
    processes on the CPU."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        data = on_cuda(batches(40, size=64))
        model = get_model("lenet", seed=0).to(CUDA)
        if kind == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            model = fully_shard()(model)
        before = [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]
        ours = find_lr(model, data, num_iter=40, end_lr=0.3, max_grad_norm=1.0, progress=False)
        after = [(p.full_tensor() if hasattr(p, "full_tensor") else p) for p in model.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(before, after))   # DTensors restored from host copies
        plain = find_lr(get_model("lenet", seed=0).to(CUDA), data, num_iter=40, end_lr=0.3, max_grad_norm=1.0,
                        cuda_graph=False, progress=False)
    finally:
        dist.destroy_process_group()
    assert not ours.config["cuda_graph"]
    np.testing.assert_allclose(ours.losses[:30], plain.losses[:30], rtol=1e-4)


def test_dict_batches_on_cuda_step_eagerly_and_refuse_a_strict_graph() -> None:
    """A Hugging Face-style model where the graph path would be taken: its dict batches run eagerly."""
    from test_rangetest import HuggingFaceStyle, make_data, make_model

    pairs = [(x.to(CUDA), y.to(CUDA)) for x, y in make_data()]
    kw = dict(num_iter=12, end_lr=1e-2, seed=0, progress=False)
    dicts = find_lr(HuggingFaceStyle().to(CUDA), [{"input_ids": x, "labels": y} for x, y in pairs], **kw)
    plain = find_lr(make_model().to(CUDA), pairs, cuda_graph=False, **kw)
    assert not dicts.config["cuda_graph"]
    np.testing.assert_allclose(dicts.losses, plain.losses, rtol=1e-5)
    with pytest.raises(ValueError, match="cuda_graph=True cannot replay steps on dict batches"):
        find_lr(HuggingFaceStyle().to(CUDA), [{"input_ids": x, "labels": y} for x, y in pairs], cuda_graph=True, **kw)


def test_a_study_on_cuda_does_not_import_torch_dynamo(mnist_root, tmp_path) -> None:
    """Its range test (from an OptimizerConfig, from a graph) and its vmapped engine need no torch._dynamo."""
    if vmap_imports_dynamo():
        pytest.skip("this torch's own vmap imports torch._dynamo")
    assert dynamo_modules_after(f"""
from lrfind import tune
tune(trials=2, epochs=1, parallel=2, batch_size=64, train_subset=512, device="cuda", progress=False,
     data_dir={str(mnist_root)!r}, out={str(tmp_path / "run")!r}, range_test_iters=50, final_seeds=1)
""") == []


def test_a_study_of_your_own_data_and_model_on_cuda(tmp_path, caplog) -> None:
    """Other image shapes and class counts through the auto-sized batch of trials, vmap and the graph;
    crops and flips drawn by the loader's CUDA generator. The crops come channels-last: batch norm
    under vmap still takes them (the trials are not trained one after another)."""
    from lrfind import tune
    from test_userdata import BlobNetHere, small_blobs

    caplog.set_level("WARNING", logger="lrfind")
    result = tune(dataset=small_blobs, model=BlobNetHere, trials=4, epochs=2, batch_size=32, device="cuda",
                  progress=False, out=str(tmp_path), range_test_iters=60, final_seeds=1, val_size=100,
                  augment="flip-crop")
    assert result.study.user_attrs["lrfind_setup"]["data"]["shape"] == [3, 8, 8]
    assert "cannot be batched with vmap" not in caplog.text
    assert result.study.best_value > 0.5 and result.final["best"]["test_acc"] > 0.5


def test_a_study_of_token_ids_and_an_embedding_model_on_cuda(tmp_path) -> None:
    """Integer inputs through vmap's embedding and the CUDA graph."""
    from lrfind import tune
    from test_userdata import BagOfWords, token_ids

    result = tune(dataset=token_ids, model=BagOfWords, trials=4, epochs=2, batch_size=32, device="cuda",
                  progress=False, out=str(tmp_path), range_test_iters=60, final_seeds=1, val_size=100)
    assert result.study.user_attrs["data"]["tokens"] is True
    assert result.study.best_value > 0.5 and result.final["best"]["test_acc"] > 0.5


def test_a_study_of_regression_targets_on_cuda(tmp_path) -> None:
    """Float targets: the mean squared error through vmap, the CUDA graph and batched evaluation."""
    from lrfind import tune
    from test_userdata import Regressor, regression_rows

    result = tune(dataset=regression_rows, model=Regressor, trials=4, epochs=2, batch_size=32, device="cuda",
                  progress=False, out=str(tmp_path), range_test_iters=60, final_seeds=1, val_size=100)
    assert result.study.user_attrs["lrfind_setup"]["metric"] == "loss"
    assert 0 < result.study.best_value < 1 and result.final["best"]["test_loss"] < 1


def test_augmentation_on_cuda_equals_the_cpus_for_the_same_offsets() -> None:
    from lrfind.data.augment import random_crop

    x = torch.randn(32, 3, 8, 8)
    on_gpu = random_crop(x.to(CUDA), torch.Generator(device=CUDA).manual_seed(0), padding=2)
    offsets = torch.randint(0, 5, (2, 32), device=CUDA, generator=torch.Generator(device=CUDA).manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i, (dy, dx) in enumerate(offsets.T.tolist()):
        assert torch.equal(on_gpu[i].cpu(), padded[i, :, dy:dy + 8, dx:dx + 8])


def test_tune_loop_over_a_cuda_loop_reports_tensor_scores(tmp_path) -> None:
    """A user's loop on CUDA: scores handed over as one-element CUDA tensors, the plateau stepped."""
    from lrfind import tune_loop
    from test_loop import TRAIN, VAL

    x, y = TRAIN.tensors[0].to(CUDA), TRAIN.tensors[1].to(CUDA)
    vx, vy = VAL.tensors[0].to(CUDA), VAL.tensors[1].to(CUDA)

    def train(trial):
        torch.manual_seed(trial.seed)
        model = torch.nn.Linear(5, 2).to(CUDA)
        optimizer = trial.optimizer(model.parameters())
        scheduler = trial.scheduler(optimizer)
        for _ in range(trial.epochs):
            for i in range(trial.steps_per_epoch):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[i::8]), y[i::8]).backward()
                optimizer.step()
                scheduler.step()
            with torch.no_grad():
                out = model(vx)
                trial.report((out.argmax(1) == vy).float().mean(), loss=torch.nn.functional.cross_entropy(out, vy))
        return trial.scores[-1]

    result = tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=8, metric="accuracy", trials=4,
                       schedules=("plateau", "onecycle"), final_seeds=1, out=str(tmp_path), progress=False)
    assert _study.counts(result.study)[0] == 4 and result.study.best_value > 0.8
    assert result.final["best"]["score_per_seed"][0] > 0.8
