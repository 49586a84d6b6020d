"""The user's own data set, named as module:function or path/to/file.py:function, or given to tune()."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import TensorDataset

import conftest
from lrfind import get_model, load_dataset, tune
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import report
from lrfind.data.images import DataSizeError
from lrfind.cli import main
from lrfind.data.augment import AugmentError
from lrfind.models import ModelError
from lrfind.study.tune_config import TuneConfig
from lrfind.data.user import DataSetError, _read, load_function

USER_DATA = '''
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

def blobs(n=600, classes=3, seed=0):
    """Colour 8x8 images whose class is a bright channel: easy to learn, unlike MNIST's shape."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return x, y

def pair():
    return blobs()

def train_and_test():
    return TensorDataset(*blobs(600)), TensorDataset(*blobs(120, seed=1))

def loaders():
    from torch.utils.data import DataLoader
    return (DataLoader(TensorDataset(*blobs(600)), batch_size=50, shuffle=True),
            DataLoader(TensorDataset(*blobs(120, seed=1)), batch_size=50))

def as_dict():
    return {"train": blobs(600), "test": blobs(120, seed=1)}

def pixels():
    x = np.zeros((60, 2, 4, 4), dtype=np.uint8)
    x[:, 0] = np.arange(60)[:, None, None]                 # channel 0: 0..59, channel 1: all 200
    x[:, 1] = 200
    return x, np.arange(60) % 2

class Listed(Dataset):
    """A Dataset of the usual kind: one (tensor, int) item per index."""
    def __init__(self):
        self.x, self.y = blobs(300)
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

def listed():
    return Listed()

class BlobNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 3))
    def forward(self, x):
        return self.net(x)

def label_list():
    x, y = blobs()
    return (x.numpy(), y.tolist()), [x[:60], y[:60].tolist()]   # as CIFAR10(...).data and .targets come

def word_labels():
    x, y = blobs()
    return x, np.array(["cat"] * len(x))

def float_labels():
    x, y = blobs()
    return x, y.float()


def nan_targets():
    x, y = blobs()
    y = y.float()
    y[3] = float("nan")
    return x, y


def mixed_labels():
    x, y = blobs()
    return (x, y.float()), (x[:20], y[:20])

def negative_labels():
    x, y = blobs()
    return x, y - 1

def from_one():
    x, y = blobs()
    return x, y + 1

def one_class():
    x, y = blobs()
    return x, y * 0

def with_nan():
    x, y = blobs()
    x[5, 0, 0, 0] = float("nan")
    return x, y

def mismatched():
    return blobs(600), (torch.zeros(10, 3, 9, 9), torch.zeros(10, dtype=torch.long))

def too_many_labels():
    x, y = blobs()
    return x, torch.cat([y, y])

class Picture:
    pass

def pictures():
    return [(Picture(), 0), (Picture(), 1)]

def ragged():
    return [(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 9, 9), 1)]

def ragged_long():
    return [(torch.zeros(3, 8, 8) if i != 150 else torch.zeros(3, 9, 9), 0) for i in range(300)]

class BrokenItem(Dataset):
    def __len__(self):
        return 300
    def __getitem__(self, i):
        if i == 150:
            raise ValueError("image 150 is unreadable")
        return torch.zeros(3, 8, 8), 0

def broken_item_long():
    return BrokenItem()

def needs_arguments(n):
    return blobs(n)

def broken():
    raise OSError("the disk is gone")

def a_string():
    return "data"

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = conftest.user_file(tmp_path, "user_data.py", USER_DATA)
    _read.cache_clear()
    yield path
    _read.cache_clear()


def test_a_tensor_pair_without_a_test_set_holds_the_last_sixth_out(user_file) -> None:
    train = load_dataset(f"{user_file}:pair", "train")
    test = load_dataset(f"{user_file}:pair", "test")
    assert (len(train), len(test)) == (500, 100) and train.classes == test.classes == 3
    assert train.images.shape[1:] == (3, 8, 8) and train.images.dtype == torch.float32
    x, y = sys.modules[_module_of(user_file)].blobs()
    assert torch.equal(test.images, x[-100:]) and torch.equal(test.labels, y[-100:])    # float images as given


class Huge(torch.utils.data.Dataset):
    """ImageNet's size: 1,281,167 images of 3x224x224 (only item 0 is ever read)."""

    def __len__(self):
        return 1_281_167

    def __getitem__(self, i):
        return torch.zeros(3, 224, 224), 0


def huge():
    return Huge()


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="available memory is read from /proc/meminfo")
def test_a_dataset_too_large_for_memory_is_refused_before_reading() -> None:
    with pytest.raises(DataSetError, match=r"dataset test_userdata:huge: its training set's 1,281,167 items of "
                                           r"3x224x224 take 718.4 GiB as float32, more than the .* GiB of available memory"):
        load_dataset("test_userdata:huge", "train")


def test_labels_as_a_list_as_torchvision_keeps_them(user_file) -> None:
    train, test = load_dataset(f"{user_file}:label_list", "train"), load_dataset(f"{user_file}:label_list", "test")
    assert (len(train), len(test), train.labels.dtype, train.classes) == (600, 60, torch.int64, 3)


@pytest.mark.parametrize("function", ["train_and_test", "as_dict", "loaders"])
def test_a_train_and_test_pair_of_datasets_dataloaders_or_a_dict(user_file, function) -> None:
    train = load_dataset(f"{user_file}:{function}", "train")
    test = load_dataset(f"{user_file}:{function}", "test")
    assert (len(train), len(test), train.labels.dtype) == (600, 120, torch.int64)


def test_a_dataset_of_items_reads_in_order(user_file) -> None:
    data = load_dataset(f"{user_file}:listed", "train")
    x, y = sys.modules[_module_of(user_file)].blobs(300)
    assert torch.equal(data.images, x[:250]) and torch.equal(data.labels, y[:250])


def test_uint8_pixels_are_standardised_per_channel_with_the_training_sets_statistics(user_file) -> None:
    train = load_dataset(f"{user_file}:pixels", "train")
    test = load_dataset(f"{user_file}:pixels", "test")
    assert train.images.dtype == torch.float32 and train.classes == 2
    assert torch.allclose(train.images[:, 0].mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(train.images[:, 0].std(), torch.tensor(1.0), atol=1e-3)
    assert train.images[:, 1].abs().max() < 1e-6              # a constant channel: centred, not divided by 0
    assert test.images[:, 0].min() > train.images[:, 0].max()  # the test set uses the training set's mean


def test_labels_counted_from_one_are_taken_but_flagged(user_file, caplog) -> None:
    assert load_dataset(f"{user_file}:from_one", "train").classes == 4
    assert "no label is 0, so its classes are 0 .. 3 and the model must return 4 scores" in caplog.text


def test_a_long_read_in_batches_gives_the_same_tensors_and_names_a_failure(user_file, monkeypatch) -> None:
    import lrfind.data.user as userdata

    monkeypatch.setattr(userdata, "READ_BATCH", 25)              # 300 items: a long read of 12 batches
    data = load_dataset(f"{user_file}:listed", "train")
    x, y = sys.modules[_module_of(user_file)].blobs(300)
    assert torch.equal(data.images, x[:250]) and torch.equal(data.labels, y[:250])
    with pytest.raises(DataSetError) as caught:                  # an item of another shape
        load_dataset(f"{user_file}:ragged_long", "train")
    assert "reading its training set failed after" in str(caught.value) and "\n" not in str(caught.value)
    assert "stack expects each tensor to be equal size" in str(caught.value)
    with pytest.raises(DataSetError) as caught:                  # an item's own error
        load_dataset(f"{user_file}:broken_item_long", "train")
    assert str(caught.value).endswith("failed after 150 items (ValueError: image 150 is unreadable); every item "
                                      "must be an image of the same shape and a label")


@pytest.mark.parametrize("layout", ["NHW", "NHWC"])
def test_uint8_pixels_as_numpy_keeps_them_become_channels_first(user_file, layout) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (60, 8, 8, 3) if layout == "NHWC" else (60, 8, 8),
                                               dtype=np.uint8)
    user_file.write_text(user_file.read_text() + f"\nimport numpy as np\nPIXELS = np.load({str(user_file)!r} + "
                         "'.npy')\ndef numpy_pixels():\n    return PIXELS, np.arange(60) % 3\n")
    np.save(str(user_file) + ".npy", pixels)
    data = load_dataset(f"{user_file}:numpy_pixels", "train")
    assert data.images.shape[1:] == ((3, 8, 8) if layout == "NHWC" else (1, 8, 8))
    channel = torch.from_numpy(pixels[:50, ..., 0] if layout == "NHWC" else pixels[:50]).float()
    expected = (channel - channel.mean()) / channel.std()       # channel 0, standardised on its own
    assert torch.allclose(data.images[:, 0], expected, atol=1e-4)


def test_the_function_runs_once_for_both_splits(user_file, monkeypatch) -> None:
    calls = []
    load_dataset(f"{user_file}:pair", "train")
    module = sys.modules[_module_of(user_file)]
    original = module.blobs
    monkeypatch.setattr(module, "blobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    load_dataset(f"{user_file}:pair", "test")
    assert calls == []


@pytest.mark.parametrize("function, message", [
    ("nan_targets", "its training targets (float labels) hold NaN or infinite values"),
    ("mixed_labels", "its test labels are integer class indices but its training labels 1 float regression"),
    ("word_labels", "its training images or labels are not numbers (can't convert np.ndarray of type numpy.str_"),
    ("negative_labels", "its training labels include -1"),
    ("one_class", "every label is 0; a classifier needs at least two classes"),
    ("with_nan", "its training images hold NaN or infinite values"),
    ("mismatched", "its test images are 3x9x9 but its training images 3x8x8"),
    ("too_many_labels", "its training labels have shape (1200,), expected (600,): one per image"),
    ("pictures", "items must be (image tensor, integer label), item 0 is (a Picture, an int)"),
    ("ragged", "reading its training set failed after 0 items"),
    ("needs_arguments", "calling it failed (TypeError: needs_arguments() missing 1 required positional argument: "
                        "'n'); it must take no arguments"),
    ("broken", "calling it failed (OSError: the disk is gone)"),
    ("a_string", "it returned a str; return a Dataset of (image, label) items"),
    ("NOT_CALLABLE", "NOT_CALLABLE is an int, not a class or function"),
    ("nowhere", "has no 'nowhere'"),
])
def test_a_data_set_that_is_not_classification_data_is_one_clear_error(user_file, function, message) -> None:
    with pytest.raises(DataSetError) as caught:
        load_dataset(f"{user_file}:{function}", "train")
    assert f"dataset {user_file}:{function}: " in str(caught.value) and message in str(caught.value)


def test_a_pil_image_item_suggests_to_tensor(user_file) -> None:
    pytest.importorskip("PIL.Image")
    user_file.write_text(user_file.read_text() + "\ndef pil():\n    import PIL.Image\n"
                         "    return [(PIL.Image.new('L', (4, 4)), 0)]\n")
    with pytest.raises(DataSetError, match=r"item 0 is \(an Image, an int\); add transform=ToTensor\(\)"):
        load_dataset(f"{user_file}:pil", "train")


def test_an_unknown_data_set_name_lists_the_choices(tmp_path) -> None:
    TuneConfig(dataset="cifar")           # a value: the data set is looked for when the study starts
    with pytest.raises(ValueError, match="choose from fashion-mnist, mnist, or name your own as module:function"):
        tune(dataset="cifar", out=str(tmp_path / "a"))
    with pytest.raises(DataSetError, match="dataset nowhere/data.py:f: no file"):
        tune(dataset="nowhere/data.py:f", out=str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


QUICK = dict(trials=2, parallel=2, epochs=2, batch_size=32, device="cpu", progress=False, base_lr=0.05, seed=0,
             final_seeds=1, val_size=100)


def test_a_study_on_your_own_data_and_model_runs_and_scores_on_its_test_set(user_file, tmp_path) -> None:
    result = tune(dataset=f"{user_file}:train_and_test", model=f"{user_file}:BlobNet", out=str(tmp_path), **QUICK)
    setup = result.study.user_attrs["lrfind_setup"]
    assert setup["data"] == {"train_examples": 600, "test_examples": 120, "shape": [3, 8, 8], "classes": 3}
    assert result.study.best_value > 0.5                       # well above a third: it learnt
    assert result.final["setup"] == {"train_images": 600, "test_images": 120, "steps": 2 * (600 // 32), "seeds": 1,
                                     "chance_acc": pytest.approx(1 / 3), "diverged_at_or_below": pytest.approx(0.3833, abs=1e-3)}
    assert result.final["best"]["test_acc"] > 0.5
    assert f"data: {user_file}:train_and_test, 500 training and 100 validation examples of 3x8x8, 3 classes\n" \
        in report.verdict(result.study)
    assert report.best_json(result.study)["data"] == {"name": f"{user_file}:train_and_test", "train": 500,
                                                      "val": 100, "shape": [3, 8, 8], "classes": 3, "augment": None}


def test_val_size_is_taken_as_given_and_one_that_leaves_no_training_data_is_refused(user_file, tmp_path) -> None:
    """The default is 10,000, at most a sixth of the set; a size the user gives is honoured, a third
    of the set here, or refused with what to do."""
    kw = dict(QUICK, dataset=f"{user_file}:train_and_test", model=f"{user_file}:BlobNet", final=False)
    study = tune(**{**kw, "val_size": None}, out=str(tmp_path / "auto")).study
    assert "500 training and 100 validation examples" in report.verdict(study)
    study = tune(**{**kw, "val_size": 200}, out=str(tmp_path / "given")).study
    assert "400 training and 200 validation examples" in report.verdict(study)
    with pytest.raises(DataSizeError, match=r"val_size 600 leaves none of the 600 training examples of .*: give "
                                            r"fewer \(a sixth, 100, is usual\), or leave it out"):
        tune(**{**kw, "val_size": 600}, out=str(tmp_path / "all"))
    assert not (tmp_path / "all").exists()                 # refused before anything was written
    result = CliRunner().invoke(main, ["tune", "--dataset", kw["dataset"], "--model", kw["model"], "--device", "cpu",
                                       "--val-size", "700", "--out", str(tmp_path / "cli"), "-q"])
    assert result.exit_code == 2 and "Error: --val-size 700 leaves none of the 600 training examples" in result.output


def test_a_resume_after_the_data_set_changed_is_refused(user_file, tmp_path) -> None:
    args = ["tune", "--dataset", f"{user_file}:pair", "--model", f"{user_file}:BlobNet", "--trials", "2",
            "--parallel", "2", "--epochs", "1", "--batch-size", "32", "--base-lr", "0.05", "--no-final",
            "--device", "cpu", "-q", "--out", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    user_file.write_text(USER_DATA.replace("def blobs(n=600", "def blobs(n=720"))     # read again: it changed
    result = CliRunner().invoke(main, [*args[:6], "3", *args[7:]])
    assert result.exit_code == 1
    assert "'train_examples': 500, 'test_examples': 100" in result.output          # there
    assert "'train_examples': 600, 'test_examples': 120" in result.output          # here


def test_tune_takes_a_data_set_function_and_stores_it_by_name(tmp_path) -> None:
    cfg = TuneConfig(dataset=small_blobs, model=BlobNetHere, out=str(tmp_path), **QUICK)
    assert cfg.dataset == "test_userdata:small_blobs"
    result = tune(cfg)
    study = optuna.load_study(study_name="lrfind-test_userdata:BlobNetHere-test_userdata:small_blobs",
                              storage=_storage.connect(str(tmp_path / "study.log"), create=False))
    assert study.best_value == result.study.best_value
    with pytest.raises(DataSetError, match="a lambda or a function inside a function has no name"):
        TuneConfig(dataset=lambda: small_blobs())
    with pytest.raises(ModelError, match=r"model is an instance of BlobNetHere, built already: .*model=MyNet, not "
                                         r"model=MyNet\(\)"):
        TuneConfig(dataset=small_blobs, model=BlobNetHere())


def test_a_function_redefined_in_a_notebook_is_read_again(monkeypatch) -> None:
    """A notebook's functions live in __main__; running a cell again replaces one by a new function."""
    notebook = types.ModuleType("notebook")
    monkeypatch.setitem(sys.modules, "notebook", notebook)
    notebook.data = lambda: (torch.zeros(12, 4), torch.arange(12) % 2)
    assert len(load_dataset("notebook:data", "train")) == 10
    notebook.data = lambda: (torch.zeros(24, 4), torch.arange(24) % 2)
    assert len(load_dataset("notebook:data", "train")) == 20


def test_data_given_as_it_is_runs_a_study_that_the_same_data_resumes(tmp_path) -> None:
    x, y = small_blobs()
    first = tune(dataset=(x, y), model=BlobNetHere, out=str(tmp_path), **QUICK)
    name = first.study.user_attrs["lrfind_setup"]["dataset"]
    assert name.startswith("given:") and first.study.study_name == f"lrfind-test_userdata:BlobNetHere-{name}"
    again = tune(dataset=(x.clone(), y.clone()), model=BlobNetHere, out=str(tmp_path), **{**QUICK, "trials": 3})
    assert again.study.study_name == first.study.study_name and _study.counts(again.study)[0] == 3    # resumed
    other = TuneConfig(dataset=(x[:300], y[:300]), model=BlobNetHere, **QUICK)
    assert other.dataset != name                                                     # other data, other study
    assert TuneConfig(dataset=TensorDataset(x, y), model=BlobNetHere, **QUICK).dataset == name   # same tensors


def test_data_given_elsewhere_or_malformed_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(DataSetError, match="dataset given:0123456789abcdef: data given as a value lives in the "
                                           "process it was given to"):
        tune(dataset="given:0123456789abcdef", out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    x, y = small_blobs()
    with pytest.raises(DataSetError, match="dataset given: its training labels are torch.bool"):
        TuneConfig(dataset=(x, y > 0))


def test_a_built_in_model_on_images_of_another_shape_says_so(user_file, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"model lenet does not take this data set's 3x8x8 images"):
        tune(dataset=f"{user_file}:pair", out=str(tmp_path / "o"), **QUICK)
    assert not (tmp_path / "o").exists()


def grey_floats():
    x = torch.randn(120, 28, 28, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(120) % 10


def test_float_images_without_a_channel_axis_get_a_hint(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"does not take this data set's 28x28 images: .*images without a channel "
                                         r"axis\? give them as \(N, 1, H, W\)$"):
        tune(dataset=grey_floats, out=str(tmp_path / "o"), **{**QUICK, "val_size": None})


def test_rows_of_features_train_and_are_named_so(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"model lenet does not take this data set's 20-feature examples: a batch "
                                         r"of shape \(2, 20\) raised"):
        tune(dataset=table, out=str(tmp_path / "o"), **QUICK)
    result = tune(dataset=table, model=TableNet, out=str(tmp_path / "t"), **QUICK)
    assert "400 training and 100 validation examples of 20 features, 2 classes" in report.verdict(result.study)


def test_cli_range_test_on_your_own_data(user_file, tmp_path) -> None:
    result = CliRunner().invoke(main, ["range-test", "--dataset", f"{user_file}:listed", "--model",
                                       f"{user_file}:BlobNet", "--batch-size", "16", "--num-iter", "30", "--device",
                                       "cpu", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "range_test.png").stat().st_size > 1000 and "suggested LR" in result.output
    assert result.output.startswith(f"data: {user_file}:listed, 209 training examples of 3x8x8, 3 classes\n")


def tiny():
    x = torch.randn(100, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(100) % 3


@pytest.mark.parametrize("command", ["range-test", "tune"])
def test_a_batch_larger_than_a_small_data_set_is_one_line_exit_2(tmp_path, command) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(main, [command, "--dataset", "test_userdata:tiny", "--model",
                                       "test_userdata:BlobNetHere", "--batch-size", "128", "--device", "cpu", "-q",
                                       "--out", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--batch-size 128 is more than the 70 training examples left after 14 for validation: lower it" \
        in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["range-test", "tune"])
@pytest.mark.parametrize("dataset, message", [
    ("nowhere/data.py:f", "--dataset nowhere/data.py:f: no file"),
    ("{file}:one_class", "--dataset {file}:one_class: every label is 0"),
    ("cifar", "'cifar' is neither a built-in data set (mnist, fashion-mnist) nor your own"),
])
def test_cli_bad_data_set_is_one_line_exit_2(user_file, tmp_path, command, dataset, message) -> None:
    out = tmp_path / "o"
    dataset, message = dataset.format(file=user_file), message.format(file=user_file)
    result = CliRunner().invoke(main, [command, "--dataset", dataset, "--device", "cpu", "-q", "--out", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_the_cifar10_example_reads_torchvisions_dataset_into_tensors(monkeypatch) -> None:
    """examples/own_data.py:cifar10 with torchvision's FakeData in place of the download."""
    datasets = pytest.importorskip("torchvision.datasets")
    monkeypatch.setattr(datasets, "CIFAR10", lambda root, train, transform, download: datasets.FakeData(
        size=60 if train else 12, image_size=(3, 32, 32), num_classes=10, transform=transform, random_offset=train))
    _read.cache_clear()
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "own_data.py"
    train = load_dataset(f"{example}:cifar10", "train")
    test = load_dataset(f"{example}:cifar10", "test")
    _read.cache_clear()
    assert train.images.shape == (60, 3, 32, 32) and len(test) == 12 and train.classes <= 10
    from lrfind.models import check_fits, get_model

    check_fits(get_model(f"{example}:CifarNet"), train.images, 10, "CifarNet")


def table():
    """Tabular data: 20 features, two classes."""
    x = torch.randn(600, 20, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long()


class TableNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(20, 2)

    def forward(self, x):
        return self.fc(x)


def small_blobs():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (600,), generator=g)
    x = torch.randn(600, 3, 8, 8, generator=g) * 0.5
    x[torch.arange(600), y] += 1.0
    return x, y


class BlobNetHere(torch.nn.Module):
    """With batch norm, whose running statistics vmap must keep per trial on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


def _module_of(path) -> str:
    """The name under which the user's file was imported."""
    return load_function(f"{path}:pair").__module__


def token_ids():
    """Text classification: sequences of 12 token ids from a vocabulary of 50; is token 7 in it?"""
    x = torch.randint(0, 50, (600, 12), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    return x, (x == 7).any(1).long()


class BagOfWords(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.embed(x).max(1).values)


def test_token_ids_train_a_model_that_embeds_them(tmp_path) -> None:
    from lrfind.data.user import dataset_name

    train, _ = load_dataset(dataset_name(token_ids), "train").holdout(100)
    assert train.images.dtype == torch.int64
    with pytest.raises(ModelError, match=r"model lenet does not take this data set's 12-token examples"):
        tune(dataset=token_ids, out=str(tmp_path / "o"), **QUICK)
    with pytest.raises(AugmentError, match="augment crop shifts and mirrors images; this data set's inputs are "
                                           "torch.int64 token ids"):
        tune(dataset=token_ids, model=BagOfWords, augment="crop", out=str(tmp_path / "a"), **QUICK)
    result = tune(dataset=token_ids, model=BagOfWords, out=str(tmp_path / "t"), **{**QUICK, "final": True})
    text = report.verdict(result.study)
    assert "400 training and 100 validation examples of 12 token ids, 2 classes" in text
    assert result.final["best"]["test_acc"] is not None


def negative_ids():
    return torch.full((60, 4), -1), torch.arange(60) % 2


def test_negative_token_ids_are_refused(tmp_path) -> None:
    with pytest.raises(DataSetError, match="inputs are integers \\(token ids\\) and include -1"):
        tune(dataset=negative_ids, model=BagOfWords, out=str(tmp_path / "o"), **QUICK)


def regression_rows():
    """Regression: 10 features, one float target (tanh of a projection), as (N,)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 10, generator=g)
    return x, torch.tanh(x @ torch.randn(10, generator=g) / 3)


class Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def forward(self, x):
        return self.f(x)


class TwoOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Linear(10, 2)

    def forward(self, x):
        return self.f(x)


def test_float_labels_that_are_whole_numbers_get_a_hint_that_classes_are_integers() -> None:
    """Classes read from a CSV come as floats, which lrfind takes as regression targets."""
    from lrfind.models import check_fits

    images = torch.zeros(4, 1, 28, 28)
    for labels, hinted in ((torch.tensor([0.0, 3.0, 1.0, 2.0]), True), (torch.tensor([[1.0], [2.0]]), True),
                           (torch.tensor([0.5, 1.0]), False), (torch.tensor([-1.0, 2.0]), False), (None, False)):
        with pytest.raises(ModelError, match="must return 1 value per example") as caught:
            check_fits(get_model("lenet"), images, 1, "lenet", regression=True, labels=labels)
        assert ("if they are classes, give them as integers (labels.astype(int), or .long())"
                in str(caught.value)) == hinted, labels
    with pytest.raises(ModelError, match=r"these are all whole numbers \(0 to 3\)"):
        check_fits(get_model("lenet"), images, 1, "lenet", regression=True, labels=torch.tensor([0.0, 3.0]))


def test_regression_targets_tune_on_the_loss_with_mse(tmp_path) -> None:
    from lrfind.data.user import dataset_name

    train, _ = load_dataset(dataset_name(regression_rows), "train").holdout(100)
    assert train.labels.dtype == torch.float32 and train.labels.shape[1:] == (1,) and train.classes == 1
    with pytest.raises(ModelError, match=r"must return 1 value per example \(the data set's regression target\)"):
        tune(dataset=regression_rows, model=TwoOutputs, out=str(tmp_path / "m"), **QUICK)
    with pytest.raises(DataSetError, match="--metric accuracy needs class labels"):
        tune(dataset=regression_rows, model=Regressor, metric="accuracy", out=str(tmp_path / "a"), **QUICK)
    assert not (tmp_path / "a").exists()
    result = tune(dataset=regression_rows, model=Regressor, out=str(tmp_path / "t"),
                  **{**QUICK, "trials": 3, "parallel": 3, "final": True, "base_lr": None, "range_test_iters": 60})
    study = result.study
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["lrfind_setup"]["metric"] == "loss" and study.user_attrs["data"]["regression"] is True
    text = report.verdict(study)
    assert "examples of 10 features, 1 regression target" in text and "accuracy" not in text
    assert "test loss (retrained on 500 examples, 1 seed)" in text
    best = study.best_trial
    assert best.user_attrs["val_acc"] == [] and best.user_attrs["epochs_run"] == 2
    assert result.final["best"]["test_acc"] is None and result.final["best"]["test_loss"] > 0
    assert 0 < best.value < 1                          # mean squared error of a target in (-1, 1)
    assert {"history.png", "lr_curves.png", "val_loss.png"} <= {p.name for p in result.files}
    assert "validation loss" in str(result.best)


def test_cli_range_test_on_regression_targets_uses_mse(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    result = CliRunner().invoke(main, ["range-test", "--dataset", "test_userdata:regression_rows", "--model",
                                       "test_userdata:Regressor", "--batch-size", "32", "--num-iter", "40",
                                       "--device", "cpu", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 regression target" in result.output
