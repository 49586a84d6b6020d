"""Shared fixtures: a small copy of the real MNIST files, so tests read real data quickly."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lrfind.data.builtin import read_idx

REPO = Path(__file__).resolve().parents[1]


def _real_root() -> Path:
    env = os.environ.get("LRFIND_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def run_script(argv: list[str], *, module: str | None = None, cwd: Path, env: dict[str, str]) -> str:
    """Run a script (``argv[0]``) or a module as ``python`` would, in this process: a fresh
    interpreter would spend seconds importing torch. Its stdout; an exit other than 0 fails. The
    arguments, environment, working folder, import path and torch's thread count are put back."""
    import contextlib
    import io
    import runpy
    import sys

    saved = sys.argv, dict(os.environ), os.getcwd(), list(sys.path), torch.get_num_threads()
    printed = io.StringIO()
    sys.argv = list(argv)
    os.environ.update(env)
    os.chdir(cwd)
    sys.path.insert(0, str(REPO) if module else str(Path(argv[0]).parent))
    try:
        with contextlib.redirect_stdout(printed):
            if module:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        assert e.code in (None, 0), f"{argv[0]} exited with {e.code!r}: {printed.getvalue()[-2000:]}"
    finally:
        sys.argv = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
        os.chdir(saved[2])
        sys.path[:] = saved[3]
        torch.set_num_threads(saved[4])
    return printed.getvalue()


def toy_batches(n_batches: int = 8, batch: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of a toy task a small model learns in a few steps: 10 features, 3 classes,
    the label the largest of three fixed linear scores."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 3, generator=g)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 10, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


def copies_fit(monkeypatch, most: int) -> None:
    """A GPU whose memory holds ``most`` copies of the model side by side in a range test: building
    the sweeps' engine with more raises CUDA's out-of-memory error."""
    from lrfind.rangetest import fused

    class Fits(fused.FusedTrials):
        def __init__(self, model, specs, **kw) -> None:
            if len(specs) > most:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            super().__init__(model, specs, **kw)

    monkeypatch.setattr(fused, "FusedTrials", Fits)


def user_file(folder: Path, name: str, source: str) -> Path:
    """``source`` written to ``folder/name``: a file of the user's, named as ``path/to/file.py:function``."""
    path = folder / name
    path.write_text(source)
    return path


def vmap_imports_dynamo() -> bool:
    """Whether torch's own ``torch.func.vmap`` imports torch._dynamo (torch 2.4 does), which
    lrfind's vmapped engine cannot avoid."""
    return dynamo_modules_after("import torch\ntorch.func.vmap(torch.sin)(torch.ones(2))") != []


def fully_shard_is_public() -> bool:
    """Whether ``torch.distributed.fsdp`` has FSDP2's ``fully_shard`` (torch 2.6 on). Before, it
    lies in ``torch.distributed._composable.fsdp`` and runs on CUDA only."""
    import torch.distributed.fsdp as fsdp

    return hasattr(fsdp, "fully_shard")


def fully_shard():
    """FSDP2's ``fully_shard``, wherever this torch has it (lrfind supports torch 2.4 on)."""
    if fully_shard_is_public():
        from torch.distributed.fsdp import fully_shard
    else:
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def dynamo_modules_after(script: str) -> list[str]:
    """The ``torch._dynamo`` modules a fresh interpreter has imported after running ``script``.

    torch imports torch._dynamo the first time a ``torch.optim`` optimizer is created or
    ``torch.func.grad`` is called: 1-2 s of start-up that lrfind's own paths avoid."""
    import subprocess
    import sys

    report = '\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith("torch._dynamo")))'
    done = subprocess.run([sys.executable, "-c", script + report], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root holding the first 3,000 training and 500 test images of the real MNIST files."""
    real = _real_root() / "MNIST" / "raw"
    if not real.is_dir():
        pytest.skip(f"real MNIST not found in {real}; set LRFIND_DATA_DIR")
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in [("train-images-idx3-ubyte", 3000), ("train-labels-idx1-ubyte", 3000),
                    ("t10k-images-idx3-ubyte", 500), ("t10k-labels-idx1-ubyte", 500)]:
        write_idx(raw / stem, read_idx(real / f"{stem}.gz")[:n])
    return root


class _Float64Made(torch.overrides.TorchFunctionMode):
    """Names every torch function that returns a float64 tensor while it is on."""

    def __init__(self) -> None:
        super().__init__()
        self.makers: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64
               for t in (out if isinstance(out, (tuple, list)) else [out])):
            self.makers.append(getattr(func, "__name__", repr(func)))
        return out


@pytest.fixture
def without_float64(monkeypatch):
    """The CPU treated as Apple's MPS is, a device without float64: lrfind must make no double
    tensor there. Yields the context that records the functions that made one."""
    monkeypatch.setattr("lrfind._device.NO_FLOAT64", {"cpu"})
    return _Float64Made()


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield


def run_processes(fn, args: tuple, nprocs: int, seconds: int = 180) -> None:
    """``fn(rank, *args)`` in ``nprocs`` spawned processes; a deadlock fails the test after
    ``seconds`` instead of hanging CI."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    for _ in range(seconds):
        if context.join(timeout=1):
            return
    for process in context.processes:
        process.kill()
    pytest.fail(f"the processes did not finish in {seconds} s: deadlocked")


def in_gloo_group(rank: int, world: int, init: str, out: str, work) -> None:
    """The body of a spawned process: joins a gloo group, writes ``work()``'s JSON-able result to
    ``out.RANK``, and leaves. Any error is printed and exits 1. torch's gloo (DDP, fully_shard)
    aborts now and then as the interpreter shuts down ("terminate called without an active
    exception", 2 of 8 runs of a plain DDP loop without lrfind), so the process leaves without the
    shutdown once its result is written."""
    import json
    import os
    import traceback

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = work()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    dist.destroy_process_group()
    os._exit(0)
