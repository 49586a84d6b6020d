"""Several workers on one study through a real PostgreSQL server; a worker killed mid-trial loses nothing.

The server is the one in $LRFIND_TEST_POSTGRES, or a private one started here with the PostgreSQL
binaries (Debian's package `postgresql`; `.ci/run` installs it). Without either the tests skip and
say why; in CI (CI=true) they fail instead, so that they cannot silently stop running.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from lrfind.study import trials as _study
from lrfind.cli import main

REPO = Path(__file__).resolve().parents[1]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    url = os.environ.get("LRFIND_TEST_POSTGRES")
    if url:
        yield url
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'lrfind[postgres]')")
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not found:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql), and LRFIND_TEST_POSTGRES is unset")
    bindir = Path(os.path.realpath(found)).parent
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="lrfind-pg-"))
    if run_as:
        shutil.chown(base, "postgres")
    data, port = base / "data", _free_port()
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "lrfind", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, text=True)
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                        f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, text=True)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lrfind", "lrfind"],
                       check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        _unavailable(f"could not start a PostgreSQL server: {detail.strip()[:300]}")
    try:
        yield f"postgresql://lrfind@127.0.0.1:{port}/lrfind"        # as users type it: no driver named
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def worker(url: str, name: str, data_root: Path, out: Path, trials: int, subset: int = 256) -> subprocess.Popen:
    env = {**os.environ, "LRFIND_DATA_DIR": str(data_root), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lrfind", "tune", "--storage", url, "--study-name", name, "--trials", str(trials),
           "--parallel", "2", "--epochs", "2", "--batch-size", "64", "--train-subset", str(subset), "--base-lr", "0.05",
           "--device", "cpu", "--no-final", "-q", "--heartbeat", "1", "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_two_workers_reach_exactly_n_trials_without_duplicates(postgres_url, mnist_root, tmp_path) -> None:
    name = f"two-{uuid.uuid4().hex[:8]}"
    procs = [worker(postgres_url, name, mnist_root, tmp_path / f"w{i}", trials=8) for i in range(2)]
    for p in procs:
        finish(p)
    study = optuna.load_study(study_name=name, storage=postgres_url)
    done = _study.finished(study)
    runs, twins, running = _study.counts(study)        # twins: repeats of a finished trial, not run again
    assert runs == 8 and running == 0
    assert len(study.trials) == 8 + twins, [(t.number, t.state) for t in study.trials]  # nothing extra was started
    assert len({t.user_attrs["worker"] for t in done}) == 2                          # both workers trained
    # each baseline (the constant at 1x and 0.5x the base LR: 8 trials) ran once
    assert sorted(_study.baseline_scale(t) for t in done if t.user_attrs.get("baseline")) == [0.5, 1.0]
    result = CliRunner().invoke(main, ["show", "--storage", postgres_url, "--study-name", name,
                                       "--out", str(tmp_path / "show")])
    assert result.exit_code == 0 and "8 finished trials" in result.output


LOOP_WORKER = """
import sys, time
import lrfind

def train(trial):
    for epoch in range(trial.epochs):
        time.sleep(0.1)
        trial.report(0.5 + 0.01 * (trial.number % 5))
    return trial.scores[-1]

lrfind.tune_loop(train, base_lr=0.1, epochs=2, steps_per_epoch=4, metric="accuracy", trials=8, same_seed=False,
                 storage=sys.argv[1], study_name=sys.argv[2], out=sys.argv[3], progress=False, heartbeat=1)
"""


def test_two_tune_loop_workers_share_one_study(postgres_url, tmp_path) -> None:
    name = f"loop-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "loop_worker.py"
    script.write_text(LOOP_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), postgres_url, name, str(tmp_path / f"w{i}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        finish(p)
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(_study.finished(study)) == len(study.trials) == 8, [(t.number, t.state) for t in study.trials]
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2                  # both workers trained
    assert sorted(_study.baseline_scale(t) for t in study.trials if t.user_attrs.get("baseline")) == [0.5, 1.0]


def test_killed_worker_loses_nothing(postgres_url, mnist_root, tmp_path) -> None:
    name = f"kill-{uuid.uuid4().hex[:8]}"
    victim = worker(postgres_url, name, mnist_root, tmp_path / "victim", trials=4, subset=1024)
    deadline = time.time() + 60
    running: list = []
    while time.time() < deadline and not running:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name=name, storage=postgres_url)
            running = study.get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
    assert running, "the victim never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = {t.number for t in running}

    finish(worker(postgres_url, name, mnist_root, tmp_path / "rescuer", trials=4, subset=1024))
    study = optuna.load_study(study_name=name, storage=postgres_url)
    states = {t.number: t.state for t in study.trials}
    assert _study.counts(study)[0] == 4                                  # runs; repeats of one take its score
    assert all(states[n] == TrialState.FAIL for n in killed)          # failed, not running forever
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    def origin(t):   # Optuna's retry callback marks its copies; lrfind's own requeue (no beat yet) too
        return t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of"))

    retried = [t for t in study.trials if origin(t) in killed]
    assert {origin(t) for t in retried} == killed
    assert all(_study.is_finished(t) for t in retried)


@pytest.mark.parametrize("url_of, expected", [
    (lambda live: "postgresql://lrfind@127.0.0.1:1/nodb", "host 127.0.0.1, database nodb"),
    (lambda live: live.rsplit("/", 1)[0] + "/nosuchdb", "database nosuchdb"),
])
def test_unreachable_database_is_one_line_naming_host_and_database(postgres_url, mnist_root, tmp_path, monkeypatch,
                                                                   url_of, expected) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    result = CliRunner().invoke(main, ["tune", "--storage", url_of(postgres_url), "--trials", "2", "--device", "cpu",
                                       "-q", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "cannot open storage" in line and expected in line
    assert "Traceback" not in line
