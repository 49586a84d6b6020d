"""Reading IDX files, data location errors, models, and the device loader."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from lrfind import get_model, load_dataset
from lrfind.data.builtin import CorruptDataError, DataNotFoundError, read_idx

from conftest import write_idx


def test_load_real_subset_normalised(mnist_root) -> None:
    data = load_dataset("mnist", "train", root=mnist_root)
    assert data.images.shape == (3000, 1, 28, 28) and data.labels.shape == (3000,)
    assert data.images.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert abs(float(data.images.mean())) < 0.1 and 0.9 < float(data.images.std()) < 1.1
    assert set(data.labels.tolist()) == set(range(10))


def test_uncompressed_files_are_read_too(tmp_path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), compress=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8), compress=False)
    assert len(load_dataset("mnist", "test", root=tmp_path, download=False)) == 5


def test_env_variable_points_at_data(mnist_root, monkeypatch) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    assert len(load_dataset("mnist", "test")) == 500


def test_missing_files_named_with_folder_and_advice(tmp_path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", "train", root=tmp_path, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "--data-dir" in msg and "LRFIND_DATA_DIR" in msg


def test_missing_folder_is_not_created(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset("mnist", "train", root=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_failed_download_leaves_the_folder_as_it_was(tmp_path, monkeypatch) -> None:
    """The folders a failed download made go again, with its partial file; folders that were there stay."""
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, download):
            raw = tmp_path / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"part")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    with pytest.raises(DataNotFoundError, match=r"download through torchvision failed \(Error downloading"):
        load_dataset("mnist", "train", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "notes.txt").write_text("mine")
    with pytest.raises(DataNotFoundError):
        load_dataset("mnist", "train", root=tmp_path)
    assert [p.name for p in (tmp_path / "MNIST").iterdir()] == ["notes.txt"]


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    path = write_idx(tmp_path / "img", np.zeros((10, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match="truncated or corrupt"):
        read_idx(path)


def test_truncated_gzip_is_a_clear_error(tmp_path) -> None:
    path = write_idx(tmp_path / "img", np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(CorruptDataError, match="cannot read"):
        read_idx(path)


def test_wrong_magic_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"<html>not found</html>")
    with pytest.raises(CorruptDataError, match="not an IDX file"):
        read_idx(path)


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="fashion-mnist, mnist"):
        load_dataset("cifar", root="/nonexistent")
    with pytest.raises(ValueError, match="lenet, mlp"):
        get_model("resnet")


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_models_run_on_mnist_shapes(name: str) -> None:
    assert get_model(name)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_model_seed_gives_the_same_weights() -> None:
    a, b = get_model("lenet", seed=3), get_model("lenet", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_device_loader_covers_an_epoch_in_shuffled_batches(mnist_root) -> None:
    data = load_dataset("mnist", "test", root=mnist_root)
    loader = data.loader(100, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(data.labels.tolist())
    assert not torch.equal(seen, data.labels)            # shuffled
    assert not torch.equal(torch.cat([y for _, y in loader]), seen)   # a new order each epoch


def test_holdout_keeps_the_last_images_for_validation(mnist_root) -> None:
    data = load_dataset("mnist", "train", root=mnist_root)
    train, val = data.holdout(10_000)
    assert len(val) == 500 and len(train) == 2500
    assert torch.equal(val.labels, data.labels[-500:])


def test_read_idx_of_a_missing_file_says_so_without_advising_to_delete_it(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="no file .*absent.gz$"):
        read_idx(tmp_path / "absent.gz")


def test_one_gpu_of_several_is_named_cuda_n_and_one_not_there_is_a_clear_error(monkeypatch) -> None:
    import torch

    from lrfind._device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"device 'cuda:2' is not here: this machine has 2 GPUs \(cuda:0 to cuda:1, "
                                         r"numbered after CUDA_VISIBLE_DEVICES\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"this machine has 1 GPU \(cuda:0,"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match=r"unknown device 'cuda:one' \(did you mean cuda:N\?\)"):
        resolve_device("cuda:one")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda:0' is not available here; use 'cpu' or 'auto'"):
        resolve_device("cuda:0")


def test_a_misspelt_name_says_which_one_it_probably_meant() -> None:
    """The same hint wherever a name is chosen from a list, in Python as on the command line."""
    from lrfind._device import resolve_device
    from lrfind.study.loop_config import LoopConfig
    from lrfind.rangetest.suggest import get_method
    from lrfind.study.tune_config import TuneConfig

    with pytest.raises(ValueError, match=r"unknown data set 'MNSIT' \(did you mean mnist\?\); choose from"):
        load_dataset("MNSIT", root="/nonexistent")
    with pytest.raises(ValueError, match=r"unknown device 'gpu' \(did you mean cuda\?\); choose from auto, cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"unknown device 'CUDA' \(did you mean cuda\?\)"):
        resolve_device("CUDA")
    with pytest.raises(ValueError, match=r"unknown suggestion method 'Valley' \(did you mean valley\?\)"):
        get_method("Valley")
    loop = {"train": print, "base_lr": 0.1, "epochs": 2, "steps_per_epoch": 1, "metric": "accuracy"}
    for config, required in ((TuneConfig, {}), (LoopConfig, loop)):
        with pytest.raises(ValueError, match=r"unknown pruner 'hyperbad' \(did you mean hyperband\?\); choose from"):
            config(pruner="hyperbad", **required)
