"""Augmentation of training batches on the device: built-in crops and flips, the user's own."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import conftest
from lrfind import tune
from lrfind.study import report
from lrfind.data.augment import AugmentError, check_augment, flip_crop, get_augment, random_crop, random_flip
from lrfind.cli import main
from lrfind.data.images import DeviceLoader, ImageData
from lrfind.study.tune_config import TuneConfig


def images(n: int = 16, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(0))


def test_a_crop_is_a_window_of_the_mirrored_image_at_the_drawn_offset() -> None:
    x = images()
    out = random_crop(x, torch.Generator().manual_seed(3), padding=2)
    offsets = torch.randint(0, 5, (2, len(x)), generator=torch.Generator().manual_seed(3))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(len(x)):
        dy, dx = offsets[:, i].tolist()
        assert torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])
    assert len({tuple(o) for o in offsets.T.tolist()}) > 1                   # not one shift for all


def test_no_padding_crops_nothing_and_a_flip_mirrors_about_half() -> None:
    x = images(200)
    assert torch.equal(random_crop(x, torch.Generator(), padding=0), x)
    out = random_flip(x, torch.Generator().manual_seed(1))
    mirrored = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((mirrored | kept).all()) and 70 < int(mirrored.sum()) < 130


def test_the_same_seed_draws_the_same_augmentation_and_each_epoch_draws_anew() -> None:
    x, y = images(64), torch.arange(64)
    first = [b for b, _ in DeviceLoader(x, y, 16, seed=5, augment=flip_crop)]
    again = [b for b, _ in DeviceLoader(x, y, 16, seed=5, augment=flip_crop)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    loader = DeviceLoader(x, y, 64, shuffle=False, seed=5, augment=flip_crop)
    epoch1, epoch2 = next(iter(loader))[0], next(iter(loader))[0]
    assert not torch.equal(epoch1, epoch2) and not torch.equal(epoch1, x)


def test_labels_and_unaugmented_loaders_are_untouched() -> None:
    x, y = images(32), torch.arange(32)
    plain = ImageData(x, y).loader(8, shuffle=False)
    assert torch.equal(torch.cat([b for b, _ in plain]), x)
    augmented = ImageData(x, y).loader(8, shuffle=False, augment=flip_crop)
    assert torch.equal(torch.cat([t for _, t in augmented]), y)


USER_AUGMENT = '''
import torch

def noise(images, generator):
    return images + 0.1 * torch.randn(images.shape, generator=generator, device=images.device)

def shrinks(images, generator):
    return images[:, :, :4, :4]

def no_generator(images):
    return images
'''


@pytest.fixture
def user_file(tmp_path):
    return conftest.user_file(tmp_path, "user_augment.py", USER_AUGMENT)


def test_the_users_own_augmentation_by_path(user_file) -> None:
    noise = get_augment(f"{user_file}:noise")
    check_augment(noise, images(), "noise")
    assert not torch.equal(noise(images(), torch.Generator()), images())


@pytest.mark.parametrize("name, message", [
    ("blur", "unknown augmentation 'blur'; choose from flip-crop, crop, or name your own"),
    ("flip_crop", "unknown augmentation 'flip_crop' (did you mean flip-crop?); choose from"),
    ("{file}:shrinks", "must return images of the shape and dtype it was given: (2, 3, 8, 8) torch.float32 gave "
                       "(2, 3, 4, 4) torch.float32"),
    ("{file}:no_generator", "raised TypeError: no_generator() takes 1 positional argument but 2 were given; "
                            "it must take (images, generator)"),
    ("{file}:absent", "has no 'absent'"),
])
def test_an_augmentation_that_does_not_fit_is_one_clear_error(user_file, name, message) -> None:
    name = name.format(file=user_file)
    with pytest.raises(AugmentError) as caught:
        check_augment(get_augment(name), images(), name)
    assert message in str(caught.value)


def test_a_built_in_crop_needs_image_shaped_data() -> None:
    with pytest.raises(AugmentError, match=r"augment crop needs \(N, C, H, W\) images; this data set's are \(20,\)"):
        check_augment(get_augment("crop"), torch.zeros(4, 20), "crop")
    with pytest.raises(AugmentError, match="must be larger than 4x4; this data set's are 4x4"):
        check_augment(get_augment("flip-crop"), torch.zeros(4, 3, 4, 4), "flip-crop")


CALLS: list[int] = []


def counted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    CALLS.append(len(images))
    return random_crop(images, generator)


QUICK = dict(trials=2, parallel=2, epochs=2, batch_size=64, train_subset=256, device="cpu", progress=False,
             range_test_iters=150, final_seeds=1, seed=0)


def test_a_study_augments_every_training_batch_and_no_validation_one(mnist_root, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    CALLS.clear()
    result = tune(augment=counted, out=str(tmp_path), **QUICK)
    assert result.study.user_attrs["lrfind_setup"]["augment"] == "test_augment:counted"
    stage_1 = json.loads((tmp_path / "range_test.json").read_text())
    sweep = sum(len(losses) for losses in stage_1["seed_losses"] or [stage_1["losses"]])   # each up to its stop
    steps = result.study.user_attrs["steps"]                   # of a trial: 2 epochs of 3 batches
    final = result.final["setup"]["steps"]                     # of the retrains, on train + validation
    # the check on two images, then the range test, the batch of 2 trials and stage 3
    assert CALLS == [2] + [64] * (sweep + steps + final)
    assert result.study.best_value > 0.1
    assert "on mnist with test_augment:counted augmentation" in (tmp_path / "best_schedule.py").read_text()
    assert "examples of 1x28x28, 10 classes, augmented with test_augment:counted" in report.verdict(result.study)


def test_a_resume_with_another_augmentation_is_refused(mnist_root, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    args = ["tune", "--trials", "2", "--parallel", "2", "--epochs", "1", "--batch-size", "64", "--train-subset",
            "256", "--base-lr", "0.05", "--no-final", "--device", "cpu", "-q", "--out", str(tmp_path)]
    assert CliRunner().invoke(main, [*args, "--augment", "crop"]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--augment", "flip-crop"])
    assert result.exit_code == 1 and "augment 'crop' there, 'flip-crop' here" in result.output


@pytest.mark.parametrize("command", ["range-test", "tune"])
def test_cli_bad_augmentation_is_one_line_exit_2(mnist_root, monkeypatch, user_file, tmp_path, command) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    out = tmp_path / "o"
    result = CliRunner().invoke(main, [command, "--augment", f"{user_file}:shrinks", "--device", "cpu", "-q",
                                       "--out", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--augment {user_file}:shrinks must return images of the shape" in result.output
    assert not out.exists()


def test_config_takes_an_augmentation_function_by_name() -> None:
    assert TuneConfig(augment=counted).augment == "test_augment:counted"
    with pytest.raises(AugmentError, match="a lambda or a function inside a function has no name"):
        TuneConfig(augment=lambda x, g: x)
