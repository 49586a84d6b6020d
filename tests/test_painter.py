"""Figures drawn in a child process (beside a GPU) or a thread, and never lost to the mechanism."""

from __future__ import annotations

import logging
import math
import os
import time

import pytest

from lrfind.study.painter import Painter


@pytest.fixture(scope="module")
def painter():
    with Painter(process=True) as p:
        yield p


def test_jobs_run_in_another_process_and_their_results_come_back(painter) -> None:
    assert painter.in_process
    assert painter.submit(math.sqrt, 16.0).result(timeout=120) == 4.0
    assert painter.submit(os.getpid).result() != os.getpid()


def test_a_jobs_error_reaches_the_caller_with_its_type(painter) -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        painter.submit(int, "not a number").result(timeout=120)
    assert painter.submit(math.sqrt, 4.0).result() == 2.0            # the child goes on


def test_a_job_that_cannot_be_pickled_is_run_in_a_thread(painter) -> None:
    assert painter.submit(lambda: os.getpid()).result(timeout=120) == os.getpid()


def here() -> int:
    return os.getpid()


def test_a_job_the_child_cannot_import_is_run_in_a_thread(painter) -> None:
    assert painter.submit(here).result(timeout=120) == os.getpid()       # this test module is not on its path
    assert painter.in_process


def test_a_range_test_figure_is_drawn_by_the_child(painter, tmp_path) -> None:
    import numpy as np

    from lrfind.study import report
    from lrfind.rangetest.result import RangeTestResult

    lrs = np.geomspace(1e-6, 1, 120)
    losses = 2.3 - 2 / (1 + np.exp(-4 * (np.log10(lrs) + 2.5))) + 30 * np.maximum(lrs - 0.2, 0)
    result = RangeTestResult(lrs, losses, stop_reason="diverged", num_iter=120)
    path = painter.submit(report.draw_range_test, result, tmp_path / "rt.png").result(timeout=120)
    assert path == tmp_path / "rt.png" and path.stat().st_size > 1000


def test_when_the_child_dies_its_jobs_and_later_ones_are_drawn_here(caplog) -> None:
    with Painter(process=True) as p:
        assert p.submit(os.getpid).result(timeout=120) != os.getpid()     # started and answering
        with caplog.at_level(logging.WARNING, logger="lrfind.study.painter"):
            in_flight = p.submit(time.sleep, 1.0)
            p._child.kill()
            assert in_flight.result(timeout=60) is None                 # redone in the thread
            assert p.submit(os.getpid).result(timeout=60) == os.getpid()
        assert not p.in_process
    assert "figure process stopped" in caplog.text


def test_a_painter_never_used_closes_at_once_and_reaps_its_child() -> None:
    p = Painter(process=True)
    child = p._child
    p.close()
    assert child.returncode is not None


def test_the_thread_painter_runs_jobs_here() -> None:
    with Painter(process=False) as p:
        assert not p.in_process
        assert p.submit(os.getpid).result() == os.getpid()
        with pytest.raises(ZeroDivisionError):
            p.submit(lambda: 1 / 0).result()


def test_the_childs_log_lines_are_stamped_on_the_parents_clock(capfd) -> None:
    """With ``-v`` the child logs when it was ready and how long each figure took, stamped with the
    seconds since the parent started, so that its lines and the parent's read as one time line."""
    import re

    from lrfind._clock import process_seconds

    lrfind_log = logging.getLogger("lrfind")
    before = lrfind_log.level
    lrfind_log.setLevel(logging.INFO)
    try:
        with Painter(process=True) as p:
            assert p.submit(math.sqrt, 9.0).result(timeout=120) == 3.0
    finally:
        lrfind_log.setLevel(before)
    now = process_seconds()
    lines = re.findall(r"^ *(\d+\.\d\d) s lrfind\.study\.painter: figure process: (ready after|sqrt took)",
                       capfd.readouterr().err, re.M)
    assert [what for _, what in lines] == ["ready after", "sqrt took"]
    stamps = [float(s) for s, _ in lines]
    assert stamps == sorted(stamps) and (now is None or stamps[-1] <= now + 0.1)


def test_a_study_figure_is_drawn_by_the_child_from_plain_records(painter, tmp_path) -> None:
    """The study figures draw records, not a study: they pickle to the child as they are."""
    from lrfind.plots import study as figures
    from lrfind.plots.records import StudyPoints, TrialPoints

    points = StudyPoints(trials=(TrialPoints(0, "constant", "COMPLETE", val_acc=(0.90, 0.95)),
                                 TrialPoints(1, "cosine", "PRUNED", val_acc=(0.50,))),
                         schedules=("constant", "cosine"), loss_label="validation loss (cross-entropy)")
    fig = painter.submit(figures.plot_history, points, path=tmp_path / "h.png").result(timeout=120)
    assert (tmp_path / "h.png").stat().st_size > 1000 and painter.in_process
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["constant", "cosine", "best so far"]
