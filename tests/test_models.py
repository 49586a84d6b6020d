"""The user's own model, named as module:function or path/to/file.py:function."""

from __future__ import annotations

import logging
import re
import sys

import pytest
import torch
from torch import nn

import conftest
from lrfind.models import LeNet, ModelError, check_fits, get_model
from lrfind.engine.mode import Mode, ModeRequest, choose
from lrfind.engine.trials import FusedTrials, TrialSpec

USER_MODELS = '''
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))

class Branchy(nn.Module):
    """A forward that reads a tensor's value: vmap cannot batch it."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        scale = 2.0 if self.fc.weight.sum().item() > 1e9 else 1.0
        return self.fc(x.flatten(1)) * scale

def takes_arguments(width):
    return nn.Linear(784, width)

def not_a_module():
    return "a string"

def wrong_input():
    return nn.Linear(100, 10)

def wrong_output():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_file(tmp_path):
    return conftest.user_file(tmp_path, "user_models.py", USER_MODELS)


def test_a_factory_in_a_file_builds_seeded_models(user_file) -> None:
    a, b = get_model(f"{user_file}:make", seed=3), get_model(f"{user_file}:make", seed=3)
    assert isinstance(a, nn.Sequential) and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[1].weight, get_model(f"{user_file}:make", seed=4)[1].weight)


def test_a_factory_in_a_module_of_the_working_directory(user_file, monkeypatch) -> None:
    monkeypatch.chdir(user_file.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(user_file.parent))])
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    assert isinstance(get_model("user_models:WithBatchNorm"), nn.Module)


@pytest.mark.parametrize("name, message", [
    ("resnet", "unknown model 'resnet'; choose from lenet, mlp, or name your own"),
    ("LeNet5", "unknown model 'LeNet5' (did you mean lenet?); choose from lenet, mlp, or name your own"),
    ("{dir}/missing.py:make", "no file"),
    ("{file}:absent", "has no 'absent'"),
    ("{file}:NOT_CALLABLE", "NOT_CALLABLE is an int, not a class or function"),
    ("{file}:takes_arguments", "calling it failed (TypeError"),
    ("{file}:not_a_module", "it returned a str, not an nn.Module"),
    ("no_such_module_here:make", "no module 'no_such_module_here'"),
])
def test_a_model_that_cannot_be_built_is_a_clear_error(user_file, name, message) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        get_model(name.format(dir=user_file.parent, file=user_file))


def test_a_file_python_does_not_run_is_a_clear_error(tmp_path) -> None:
    saved = tmp_path / "net.txt"                    # a model saved with another suffix, say from a notebook
    saved.write_text("import torch\nmake = lambda: torch.nn.Linear(784, 10)\n")
    with pytest.raises(ModelError, match=r"net.txt is not a Python source file; give a .py file"):
        get_model(f"{saved}:make")


def test_a_file_that_fails_to_run_names_the_error(tmp_path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_package_at_all\n")
    with pytest.raises(ModelError, match="running .*broken.py failed .*ModuleNotFoundError"):
        get_model(f"{broken}:make")


@pytest.mark.parametrize("factory, message", [
    ("wrong_input", r"does not take this data set's 1x28x28 images: a batch of shape \(2, 1, 28, 28\) raised"),
    ("wrong_output", r"must return 10 class scores per image: .* gave \(2, 5\), expected \(2, 10\)"),
])
def test_a_model_that_does_not_fit_the_images_is_a_clear_error(user_file, factory, message) -> None:
    with pytest.raises(ModelError, match=message):
        check_fits(get_model(f"{user_file}:{factory}"), torch.zeros(4, 1, 28, 28), 10, factory)


def test_a_compiled_model_is_trained_as_the_module_inside(tmp_path, caplog) -> None:
    """lrfind's engine batches the trials and replays its own step: a torch.compile wrapper would
    only cost each trial a compile (and keep fx from folding the trials)."""
    source = "import torch\nfrom lrfind.models import LeNet\ndef net():\n    return torch.compile(LeNet())\n"
    name = f"{conftest.user_file(tmp_path, 'compiled.py', source)}:net"
    with caplog.at_level(logging.INFO, logger="lrfind"):
        models = [get_model(name, seed=0) for _ in range(3)]
        engine = FusedTrials(name, [TrialSpec("constant", {}, seed=s) for s in range(2)], base_lr=0.1, total_steps=2,
                             steps_per_epoch=2, vectorize=True)
        engine.step(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    assert all(type(m) is LeNet for m in models) and type(engine.base) is LeNet
    assert caplog.text.count("is compiled (torch.compile); lrfind trains the module inside") == 1
    assert "the 2 trials run folded into the channels" in caplog.text
    assert torch.equal(models[0].conv1.weight, get_model(name, seed=0).conv1.weight)


def test_a_half_precision_model_is_told_about_amp() -> None:
    with pytest.raises(ModelError, match=r"raised RuntimeError: .*; the model's weights are float16 and the data "
                                         r"float32: return the model in float32, and for mixed precision pass --amp"):
        check_fits(LeNet().half(), torch.zeros(4, 1, 28, 28), 10, "half")


def test_checking_a_model_leaves_its_state_and_mode(user_file) -> None:
    model = get_model(f"{user_file}:WithBatchNorm", seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 1, 28, 28)
    rng = torch.get_rng_state()
    check_fits(model, images, 10, "WithBatchNorm")
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_model_vmap_cannot_batch_trains_trial_after_trial(user_file, caplog) -> None:
    name = f"{user_file}:Branchy"
    specs = [TrialSpec("constant", {}, seed=s) for s in range(3)]
    engine = FusedTrials(name, specs, base_lr=0.1, total_steps=4, steps_per_epoch=4, vectorize=True, fold=False)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    weights = engine.flat.clone()
    with caplog.at_level(logging.WARNING, logger="lrfind"):
        mode = choose(engine, ModeRequest(), Mode("vmapped", False), x, y)   # what the default does on a GPU
    assert mode == Mode("looped", False) and torch.equal(engine.flat, weights)          # tried on copies
    assert "cannot be batched with vmap" in caplog.text and "3 trials train one after another" in caplog.text
    looped = FusedTrials(name, specs, base_lr=0.1, total_steps=4, steps_per_epoch=4, vectorize=False)
    weights = looped.flat.clone()
    looped.step(x, y)
    assert not torch.equal(looped.flat, weights) and torch.isfinite(looped.flat).all()


def test_a_model_vmap_can_batch_stays_vectorized(user_file, caplog) -> None:
    engine = FusedTrials(f"{user_file}:WithBatchNorm", [TrialSpec("constant", {}, seed=s) for s in range(2)],
                         base_lr=0.1, total_steps=4, steps_per_epoch=4, vectorize=True, fold=False)
    buffers = {k: v.clone() for k, v in engine.buffers.items()}
    mode = choose(engine, ModeRequest(), Mode("vmapped", False), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    assert mode == Mode("vmapped", False) and "vmap" not in caplog.text
    assert all(torch.equal(v, buffers[k]) for k, v in engine.buffers.items())    # the running stats untouched


def test_lenet_pools_before_its_relu_and_is_the_seeds_function() -> None:
    """LeNet applies ReLU after max-pooling (less work); the seed's relu-then-pool gives the same
    outputs and gradients."""
    import torch.nn.functional as F

    model = get_model("lenet", seed=0)

    def seeds_order(x):
        x = model.pool(F.relu(model.conv1(x)))
        x = model.pool(F.relu(model.conv2(x)))
        return model.fc3(F.relu(model.fc2(F.relu(model.fc1(x.flatten(1))))))

    x, y = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    ours, seeds = model(x), seeds_order(x)
    assert torch.equal(ours, seeds)
    for a, b in zip(torch.autograd.grad(F.cross_entropy(ours, y), list(model.parameters())),
                    torch.autograd.grad(F.cross_entropy(seeds, y), list(model.parameters()))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
