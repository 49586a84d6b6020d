"""lrfind's CPU threads: each process takes its share of the cores it may use, divided among the
live workers of its study on this host; ``threads`` overrides; a count the user chose (the
environment, ``torch.set_num_threads``) is left alone. Nothing here is timed."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import optuna
import pytest
import torch
from click.testing import CliRunner

from lrfind import _threads, find_lr, tune, tune_loop
from lrfind.study import storage as _storage
from lrfind.study import workers as _workers
from lrfind.cli import main
from lrfind.study.tune_config import TuneConfig

TORCH_DEFAULT = _threads.torch_default          # the fixture below stands another in


@pytest.fixture(autouse=True)
def as_found(monkeypatch):
    """lrfind's record of the threads as in a fresh process; no variable set; torch's count put
    back afterwards. torch's default is taken to be the count the test starts with (the suite's
    fixture sets one), as if no one had set it."""
    before = torch.get_num_threads()
    for name in ("_ours", "_found", "_said"):
        monkeypatch.setattr(_threads, name, None)
    for name in _threads.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_threads, "torch_default", lambda: before)
    yield before
    torch.set_num_threads(before)


def cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(_threads, "usable_cores", lambda cpus=None: n)


def test_each_worker_takes_its_share_of_the_cores_at_least_one() -> None:
    assert _threads.decide(cores=8).threads == 8
    assert _threads.decide(cores=8, workers=2).threads == 4
    assert _threads.decide(cores=8, workers=3).threads == 2           # never more than the cores in all
    assert _threads.decide(cores=2, workers=3).threads == 1
    assert "2 cores shared by 2 workers of the study" in _threads.decide(cores=2, workers=2).why
    assert _threads.decide(cores=2, workers=2, threads=3).threads == 3          # the user's count wins
    left = _threads.decide(cores=8, users="OMP_NUM_THREADS=4")
    assert left.threads is None and left.why == "left as OMP_NUM_THREADS=4 set them"
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _threads.decide(cores=2, threads=0)


def test_the_cores_are_those_of_the_affinity_with_hyper_thread_siblings_counted_once(monkeypatch, tmp_path) -> None:
    for cpu, siblings in enumerate(["0,2", "1,3", "0,2", "1,3"]):     # 2 cores of 2 hyper-threads each
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    monkeypatch.setattr(_threads, "_CPUS", tmp_path)
    assert _threads.usable_cores([0, 1, 2, 3]) == 2
    assert _threads.usable_cores([0, 2]) == 1                 # one core's two hyper-threads
    (tmp_path / "online").write_text("0,2-3\n")
    assert TORCH_DEFAULT() == 2                               # torch's: the machine's cores, whatever the affinity
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 2}, raising=False)    # as under taskset -c 1,2
    assert _threads.usable_cores() == 2
    monkeypatch.setattr(_threads, "_CPUS", tmp_path / "none")
    assert _threads.usable_cores() == 2                       # no topology to read: every CPU counts


def test_a_process_alone_takes_the_cores_of_its_affinity(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)       # taskset -c 0
    with _threads.restored():
        assert _threads.apply() == 1 and torch.get_num_threads() == 1


def test_the_users_setting_is_told_from_the_environment_and_from_torch() -> None:
    said = _threads.users_setting
    assert said(4, {"OMP_NUM_THREADS": "4"}, default=8, ours=None) == "OMP_NUM_THREADS=4"
    assert said(8, {"MKL_NUM_THREADS": " 2 "}, default=8, ours=None) == "MKL_NUM_THREADS=2"
    assert said(8, {"OMP_NUM_THREADS": ""}, default=8, ours=None) is None        # empty: not set
    assert said(8, {}, default=8, ours=None) is None                              # torch's own
    assert said(3, {}, default=8, ours=None) == "torch.set_num_threads(3)"       # before lrfind set any
    assert said(4, {}, default=8, ours=4) is None                                 # what lrfind set
    assert said(8, {}, default=8, ours=4) == "torch.set_num_threads(8)"          # changed since


def test_a_second_live_worker_of_the_study_on_this_host_halves_the_threads(tmp_path, monkeypatch, caplog) -> None:
    storage = _storage.connect(str(tmp_path / "study.log"))
    study = optuna.create_study(storage=storage, study_name="s")
    host = socket.gethostname()
    ours, other, dead, elsewhere, done = (study.ask() for _ in range(5))
    ours.set_user_attr("worker", _workers.WORKER)
    other.set_user_attr("worker", f"{host}:{os.getppid()}")              # a process that runs
    dead.set_user_attr("worker", f"{host}:{2 ** 22 + 7}")                 # above any pid Linux hands out
    elsewhere.set_user_attr("worker", f"another-{host}:{os.getppid()}")   # other cores than this host's
    done.set_user_attr("worker", f"{host}:{os.getpid() + 1}")
    study.tell(done, 0.5)                                                  # a finished trial runs no more
    assert _workers.workers_here(study) == 2

    cores(monkeypatch, 2)
    keeper = _threads.Keeper(None, lambda: _workers.workers_here(study))
    with caplog.at_level(logging.INFO, logger="lrfind"), _threads.restored():
        assert keeper.apply() == 1 and torch.get_num_threads() == 1
        study.tell(other, 0.5)                                   # the other worker waits: the cores are ours
        keeper.tick()                                            # too soon to look again
        assert torch.get_num_threads() == 1
        keeper.every = 0
        keeper.tick()
        assert torch.get_num_threads() == 2
    assert "1 CPU thread for the trials: 2 cores shared by 2 workers of the study on this host" in caplog.text
    assert "2 CPU threads for the trials: the 2 cores this process may use" in caplog.text


def test_threads_given_win_and_the_workers_are_not_even_counted(monkeypatch, as_found) -> None:
    cores(monkeypatch, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    def count() -> int:
        raise AssertionError("counted")

    with _threads.restored():
        assert _threads.Keeper(3, count).apply() == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == as_found                   # put back


def test_omp_num_threads_in_the_environment_is_left_alone(monkeypatch, caplog) -> None:
    cores(monkeypatch, 4)
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with caplog.at_level(logging.INFO, logger="lrfind"):
        assert _threads.apply(None, workers=1, what="the range test") == 1
    assert torch.get_num_threads() == 1
    assert "1 CPU thread for the range test: left as OMP_NUM_THREADS=1 set them" in caplog.text


def test_the_users_torch_set_num_threads_is_left_alone_before_and_after_lrfind_set_its_own(
        monkeypatch, as_found) -> None:
    cores(monkeypatch, 2)
    torch.set_num_threads(as_found + 1)             # before lrfind's first look: not torch's default
    assert _threads.apply() == as_found + 1 and torch.get_num_threads() == as_found + 1
    monkeypatch.setattr(_threads, "_found", None)
    torch.set_num_threads(as_found)                 # torch's default: lrfind decides
    with _threads.restored():
        assert _threads.apply(workers=2) == 1
        torch.set_num_threads(2)                    # the user's own, after lrfind's
        assert _threads.apply(workers=2) == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2             # theirs stays when lrfind's work is done


def test_find_lr_sweeps_with_the_threads_given_and_puts_them_back(as_found) -> None:
    seen = []
    model = torch.nn.Linear(4, 3)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(4)]

    def step(model, batch):
        seen.append(torch.get_num_threads())
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    find_lr(model, batches, step_fn=step, num_iter=5, progress=False, warn=False, threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == as_found
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        find_lr(model, batches, step_fn=step, num_iter=5, threads=0)


def test_tune_loop_runs_each_trial_with_its_share_and_puts_the_threads_back(tmp_path, monkeypatch, as_found) -> None:
    cores(monkeypatch, 2)
    monkeypatch.setattr(_workers, "workers_here", lambda study: 2)          # another worker runs a trial here
    seen = []

    def train(trial):
        seen.append(torch.get_num_threads())
        trial.report(0.5)
        return 0.5

    tune_loop(train, base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=2, final_seeds=0,
              out=str(tmp_path), progress=False)
    assert seen == [1, 1] and torch.get_num_threads() == as_found


def test_tune_trains_with_the_threads_given(mnist_root, tmp_path, monkeypatch, caplog, as_found) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        TuneConfig(threads=0)
    with caplog.at_level(logging.INFO, logger="lrfind"):
        tune(trials=1, epochs=1, batch_size=64, train_subset=256, device="cpu", progress=False, base_lr=0.05,
             final=False, out=str(tmp_path), threads=1)
    assert "1 CPU thread for the trials: as asked (threads=1)" in caplog.text
    assert torch.get_num_threads() == as_found


@pytest.mark.parametrize("command", ["tune", "range-test"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_below_one_is_a_one_line_error_exit_2(command, value, tmp_path) -> None:
    result = CliRunner().invoke(main, [command, "--threads", value, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    if value == "two":                                  # not a number: click's own error
        assert "'two' is not a valid integer" in result.output
        return
    assert result.output.strip().splitlines() == [
        f"Error: --threads must be a positive integer (CPU threads), got {value}; leave it out for lrfind's choice"]


def test_threads_are_checked_before_torch_is_imported() -> None:
    script = ("import sys; from click.testing import CliRunner; from lrfind.cli import main; "
              "r = CliRunner().invoke(main, ['tune', '--threads', '0']); print(r.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr


def test_verbose_output_names_the_choice(mnist_root, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _threads.ENVIRONMENT}
    env.update(LRFIND_DATA_DIR=str(mnist_root), MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    args = [sys.executable, "-m", "lrfind", "-v", "range-test", "--device", "cpu", "--num-iter", "10", "-q",
            "--out", str(tmp_path)]
    given = subprocess.run([*args, "--threads", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert given.returncode == 0, given.stderr[-2000:]
    assert "lrfind._threads: 1 CPU thread for the range test: as asked (threads=1)" in given.stderr
    left = subprocess.run(args, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert left.returncode == 0, left.stderr[-2000:]
    assert "1 CPU thread for the range test: left as OMP_NUM_THREADS=1 set them" in left.stderr
