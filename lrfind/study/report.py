"""The report of a study: a table of the top trials, the verdict against the constant LR, and files.

Everything here reads the stored study (trial attributes and the study's user attributes), so
``lrfind show`` prints the same report from any machine that reaches the storage.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrfind.study import figures as _figures
from lrfind.study import retries as _retries
from lrfind.study import trials as _study
from lrfind.study.best import best_json, diverged_seeds, final_of, from_study, paired_gain
from lrfind._duration import duration_text
from lrfind._files import write_whole
from lrfind._output import counted
from lrfind.data.images import data_line
from lrfind.rangetest.result import describe_sweeps
from lrfind.schedules import params_text

log = logging.getLogger(__name__)


def _params_text(params: dict[str, Any], limit: int = 60) -> str:
    """``schedules.params_text``, cut to ``limit`` characters."""
    text = params_text(params)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(t: FrozenTrial) -> str:
    epochs = t.user_attrs.get("epochs_run", 0)
    if t.state == TrialState.COMPLETE and _study.is_twin(t):
        return f"as trial {t.user_attrs['duplicate_of']} (not rerun)"
    if t.state == TrialState.COMPLETE:
        return counted(epochs, "epoch")
    if t.state == TrialState.PRUNED:
        return f"pruned after {epochs}"
    if t.user_attrs.get("failure") == "nan":        # the engine knows the step; a loop of the user's, the epoch
        step = t.user_attrs.get("failed_at_step")
        return f"failed: NaN at step {step}" if step is not None else f"failed: NaN after epoch {epochs}"
    if "interrupted" in t.user_attrs:
        return "interrupted"
    return t.state.name.lower()


def loss_text(x: float, *, signed: bool = False) -> str:
    """A loss for people: 4 decimals, or 3 significant digits where decimals would hide it (a
    regression's 0.00031, a difference of 0.00009)."""
    sign = "+" if signed else ""
    return f"{x:{sign}.4f}" if x == 0 or abs(x) >= 0.01 else f"{x:{sign}.3g}"


def top_table(study: optuna.Study, n: int = 10) -> str:
    """The ``n`` best finished trials by the study's metric, then a count of the rest by state."""
    trials = [t for t in study.get_trials(deepcopy=False) if _study.is_finished(t)]
    loss = _study.metric_of(study) == "loss"           # then its column comes first: it ranks them
    rows = [f"{'#':>4}  {'schedule':<16} " + (f"{'val loss':>8}  " if loss else "")
            + f"{'val acc':>8}  {'peak LR':>8}  {'run':<22} parameters"]
    for t in _study.ranked(study, trials)[:n]:
        acc = _study.val_acc(t, study)
        shown = f"{100 * acc:>7.2f}%" if acc is not None else f"{'-':>8}"
        if loss:
            value = _study.val_loss(t)
            shown = f"{loss_text(value) if value is not None else '-':>8}  " + shown
        rows.append(f"{t.number:>4}  {t.user_attrs.get('schedule', '?'):<16} {shown}  "
                    f"{_study.peak_lr(study, t):>8.3g}  {_status(t):<22} {_params_text(t.user_attrs.get('params', {}))}")
    runs = [t for t in trials if not _study.is_twin(t)]
    counts = {s: sum(t.state == s for t in runs) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    twins = len(trials) - len(runs)
    rows.append(f"{len(runs)} finished trials: {counts[TrialState.COMPLETE]} complete, "
                f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed"
                + (f"; and {twins} repeat{'s' if twins != 1 else ''} of a finished trial's choices, scored as it "
                   "without running" if twins else ""))
    return "\n".join(rows)


def _base_lr_source(source: str, range_test: dict[str, Any]) -> str:
    """Where the base LR came from; for a repeated range test, over how many sweeps and their spread."""
    found = [lr for lr in range_test.get("seed_lrs") or [] if lr is not None]
    if source == "range test" and range_test.get("sized") and len(range_test.get("seed_lrs") or []) < 2:
        return f"range test; {range_test['sized']}"
    if source != "range test" or len(range_test.get("seed_lrs") or []) < 2 or not found:
        return source
    shallow = set(range_test.get("shallow") or [])
    counted = [lr for i, lr in enumerate(range_test["seed_lrs"]) if i not in shallow]
    text = (f"range test, the median of {len(counted)} sweeps' suggestions "
            f"{', '.join(f'{lr:.2g}' for lr in counted if lr is not None)}")
    if shallow:
        lrs = describe_sweeps([range_test["seed_lrs"][i] for i in sorted(shallow)], digits=2)
        text += (f" ({len(shallow)} more fell too little to count and {'was' if len(shallow) == 1 else 'were'} "
                 f"left out: {lrs})")
    faster = range_test.get("faster_sweeps")
    if faster:
        lrs = describe_sweeps(faster["seed_lrs"], faster.get("shallow") or [], digits=2)
        text += (f" at {range_test.get('num_iter')} steps each; at {faster['num_iter']} steps they disagreed "
                 f"({lrs}), so it swept again at half the pace")
    return text


def verdict(study: optuna.Study) -> str:
    """Does decay help? The best schedule against the constant LR, in validation and test accuracy."""
    best, constant = _study.best(study), _study.constant_baseline(study)
    if best is None:
        return "no trial completed"
    base_lr = study.user_attrs.get("base_lr", float("nan"))
    data = study.user_attrs.get("data")                   # what the trials trained on; older studies lack it
    lines = [data_line(data["name"], data["train"], data["shape"], data["classes"], data.get("augment"),
                       val=data["val"], tokens=data.get("tokens", False),
                       regression=data.get("regression", False))] if data else []
    range_test = study.user_attrs.get("range_test") or {}
    lines.append(f"base LR {base_lr:.3g} ({_base_lr_source(study.user_attrs.get('base_lr_source', '?'), range_test)})")
    lines += [f"range test warning: {w}" for w in range_test.get("warnings", [])]
    stopped = study.user_attrs.get("stopped_by_timeout")
    if stopped:
        lines.append(f"search stopped by --timeout {duration_text(stopped['timeout'])} after {stopped['finished']} of "
                     f"{stopped['trials']} trials: run the same command again to go on")
    given_up = study.user_attrs.get("given_up")
    if given_up:
        trials = study.get_trials(deepcopy=False)
        named = ", ".join(f"{n} ({trials[n].user_attrs.get('schedule', '?')})" for n in given_up if n < len(trials))
        lines.append(f"given up: trial{'s' if len(given_up) > 1 else ''} {named}, cut short {_retries.MAX_RETRIES + 1} "
                     "times each (a worker killed, out of memory?); the search went on without "
                     f"{'them' if len(given_up) > 1 else 'it'}")
    name = best.user_attrs.get("schedule")
    if name == "constant" and best.user_attrs.get("params", {}).get("warmup"):
        name = "constant after a warmup"
    params = _params_text(best.user_attrs.get("params", {}), 200)
    lines.append(f"best: trial {best.number}, {name} " + (f"peaking at LR {_study.peak_lr(study, best):.3g}, {params}"
                 if params else f"at LR {_study.peak_lr(study, best):.3g}"))
    lines += _validation_lines(study, best, constant)
    final = final_of(study, best)
    stored = study.user_attrs.get("final") or {}
    earlier = stored.get("best", {}).get("trial")
    if not final and earlier is not None and stored.get("setup", {}).get("kind") == "seeds":
        lines.append(f"new seeds: not run for trial {best.number} (they ran for trial {earlier}, the best before "
                     "it); call tune_loop again with final_seeds=3 to run them")
    elif not final and earlier is not None:
        lines.append(f"test accuracy: not measured for trial {best.number} (stage 3 retrained trial {earlier}, "
                     "the best before it); run the same command without --no-final to test it")
    if final.get("best"):
        lines += _test_lines(study, final)
    return "\n".join(lines)


def _validation_lines(study: optuna.Study, best: FrozenTrial, constant: FrozenTrial | None) -> list[str]:
    """Best against constant on validation: the loss when it is the metric, the accuracy when the
    labels are classes."""
    loss = _study.metric_of(study) == "loss"
    acc = _study.val_acc(best, study)               # None for regression targets
    scores = ([f"{loss_text(best.value)} validation loss"] if loss else []) + \
        ([f"{100 * acc:.2f}% validation accuracy"] if acc is not None else [])
    if constant is None:
        return [", ".join(scores) + " (the constant baseline did not complete)"]
    tried = _study.constants(study)
    lrs = sorted(_study.peak_lr(study, t) for t in tried)
    chosen = ([f"constant baseline: trial {constant.number} at LR {_study.peak_lr(study, constant):.3g}, the best of "
               f"{len(tried)} constant-LR trials (LR {lrs[0]:.3g} to {lrs[-1]:.3g})"] if len(tried) > 1 else [])
    if best.number == constant.number:
        return ["no schedule beat the constant LR: " + ", ".join(scores)] + chosen
    lines = chosen + ([f"validation loss {loss_text(best.value)} vs constant {loss_text(constant.value)} "
                       f"({loss_text(best.value - constant.value, signed=True)})"] if loss else [])
    if acc is not None:
        other = _study.val_acc(constant, study)
        lines.append(f"validation accuracy {100 * acc:.2f}% vs constant {100 * other:.2f}% "
                     f"({100 * (acc - other):+.2f} pp)")
    return lines


def _test_lines(study: optuna.Study, final: dict[str, Any]) -> list[str]:
    """Stage 3's verdict: test accuracy (class labels), and test loss when the study is scored on it;
    for ``tune_loop``, the best and the constant run again with new seeds, on the study's metric.
    Then the runs that diverged, and the gain from decay with its standard error (``_conclusion``)."""
    b, c = final["best"], final.get("constant", {})
    n = final["setup"].get("seeds", 1)
    accuracy = ("accuracy", 100.0, "{:.2f}%".format, "{:+.2f} pp".format, "{:+.2f}".format)
    signed = functools.partial(loss_text, signed=True)
    loss = ("loss", 1.0, loss_text, signed, signed)
    if final["setup"].get("kind") == "seeds":       # tune_loop's: the user's own validation, new seeds
        context = f" over {n} new seed{'s' if n != 1 else ''} (mean)"
        name, *formats = accuracy if _study.metric_of(study) == "accuracy" else loss
        kinds = [(f"validation {name}", "score", *formats)]
    else:
        data = study.user_attrs.get("data") or {}
        images = len(data.get("shape", [1, 28, 28])) > 1 and not data.get("tokens")     # else rows or sequences
        held = final["setup"].get("val_images")
        context = (f" (retrained on {final['setup']['train_images']:,} {'images' if images else 'examples'}"
                   + (f", {final['best']['schedule']} stepping on the validation loss of {held:,} more" if held else "")
                   + f", {f'mean of {n} seeds' if n != 1 else '1 seed'})")
        kinds = [("test accuracy", "test_acc", *accuracy[1:])]
        if _study.metric_of(study) == "loss":
            kinds.append(("test loss", "test_loss", *loss[1:]))
    lines = []
    key = kinds[-1][1]                                # the score the verdict is on
    for kind, score, scale, value, diff, per_seed in kinds:
        if b.get(score) is None:
            continue
        text = f"{kind}{context}: {value(scale * b[score])}"
        context = ""                                  # said once
        if c.get(score) is not None and c.get("trial") != b.get("trial"):
            text += f" vs constant {value(scale * c[score])} ({diff(scale * (b[score] - c[score]))}"
            pairs = _per_seed(b, c, score, key)
            text += (f"; per seed {', '.join(d if isinstance(d, str) else per_seed(scale * d) for d in pairs)})"
                     if len(pairs) > 1 else ")")
        lines.append(text)
    lines += _diverged_lines(study, final, key)
    conclusion = _conclusion(study, b, c, key)
    return lines + ([conclusion] if conclusion else [])


def _per_seed(b: dict[str, Any], c: dict[str, Any], score: str, key: str) -> list[float | str]:
    """Best minus constant seed by seed, ``"diverged"`` where either run diverged."""
    left = {*diverged_seeds(b, key), *diverged_seeds(c, key), *diverged_seeds(b, score), *diverged_seeds(c, score)}
    xs, ys = b.get(score + "_per_seed") or [], c.get(score + "_per_seed") or []
    seeds = b.get("seeds") if len(b.get("seeds") or []) == len(xs) else [None] * len(xs)
    return ["diverged" if s in left or x is None or y is None else x - y for s, x, y in zip(seeds, xs, ys)]


def _diverged_lines(study: optuna.Study, final: dict[str, Any], key: str) -> list[str]:
    """A line for each side whose runs diverged: how many, at which LR, and what that means."""
    lines = []
    loop = final["setup"].get("kind") == "seeds"
    chance = final["setup"].get("chance_acc")
    constant_trial = (final.get("constant") or {}).get("trial")
    for label in ("best", "constant"):
        side = final.get(label) or {}
        if not side or label == "constant" and side.get("trial") == final["best"].get("trial"):
            continue
        is_constant = side.get("trial") == constant_trial      # the constant may be the best trial itself
        out = diverged_seeds(side, key)
        if not out:
            continue
        seeds = side.get("seeds") or []
        accs = side.get("score_per_seed" if loop else "test_acc_per_seed") or []
        shown = dict(zip(seeds, accs)) if len(accs) == len(seeds) else {}

        def said(seed: int) -> str:
            x = shown.get(seed)
            if x is None or not math.isfinite(x):
                shown_x = "NaN" if x is None or math.isnan(x) else f"{x:g}"
                return f"seed {seed}: {'score' if loop else 'loss'} {shown_x}"
            if loop:
                return f"seed {seed}: {x:.4g}"
            return f"seed {seed}: {100 * x:.2f}% test accuracy" + (f", chance {100 * chance:.0f}%" if chance else "")

        who = "the constant LR" if is_constant else f"the schedule ({side.get('schedule', '?')})"
        lr = side.get("lr")
        at = "" if lr is None else f" at LR {lr:.3g}" if is_constant else f" peaking at LR {lr:.3g}"
        runs = "runs with new seeds" if loop else "retrains"
        lines.append(f"{who} diverged in {len(out)} of {len(seeds) or final['setup'].get('seeds', '?')} {runs}{at} "
                     f"({'; '.join(map(said, out))}): left out of its mean and of the gain. At this LR some starts "
                     "blow up and others train: it sits at the edge of what the model trains at, and a lower LR "
                     "is the safer choice")
    return lines


def _conclusion(study: optuna.Study, b: dict[str, Any], c: dict[str, Any], key: str) -> str | None:
    """What the final comparison (``key``: the study's metric there) says about decay: the gain seed
    by seed over the constant, its mean and standard error (``best.paired_gain``: clear when at
    least twice its standard error from zero)."""
    if not c or c.get("trial") == b.get("trial"):
        return None
    gain = paired_gain({"best": b, "constant": c}, key, _study.sign(study))
    if gain is None:
        return None
    accuracy = key == "test_acc" or key == "score" and _study.metric_of(study) == "accuracy"
    name = {"test_acc": "test accuracy", "test_loss": "test loss"}.get(key, "validation " + _study.metric_of(study))
    searched = (study.user_attrs.get("lrfind_setup") or {}).get("search_constant_lr")
    constant = f"the {'best ' if searched else ''}constant LR" + (f" ({c['lr']:.3g})" if c.get("lr") else "")
    if gain["verdict"] == "no pair":
        return (f"verdict: no seed where both the schedule and {constant} trained without diverging: no measure of "
                "the gain from decay")
    mean, se = gain["difference"], gain["se"]
    shown = f"{100 * mean:+.2f} pp" if accuracy else loss_text(mean, signed=True)
    if gain["verdict"] == "no estimate":
        return (f"verdict: decay gains {shown} {name} over {constant} on 1 paired seed: one seed gives no estimate "
                "of the noise; retrain over 3 seeds or more to know")
    shown += f" ± {100 * se:.2f}" if accuracy else f" ± {loss_text(se)}"
    pairs = (f"the mean ± standard error of {gain['pairs']} paired seeds" if gain["pairs"] == len(b.get("seeds") or ())
             or not b.get("seeds") else f"the mean ± standard error of the {gain['pairs']} paired seeds where "
             "neither diverged")
    if gain["verdict"] == "no clear gain":
        return (f"verdict: no clear gain from decay: {shown} {name} over {constant}, {pairs} (within twice its "
                "standard error): the constant LR does as well here")
    if gain["verdict"] == "constant better":
        return (f"verdict: the constant LR did better: {shown} {name}, {pairs} (more than twice its standard "
                f"error): the schedule's validation lead in the search did not hold up; keep {constant}, or "
                "search more trials or epochs")
    setup = study.user_attrs.get("lrfind_setup")
    at_base = setup is not None and not setup.get("search_constant_lr")   # a study made before it was searched
    return (f"verdict: decay helps: {shown} {name} over {constant}, {pairs} (a clear gain: more than twice its "
            "standard error)" + ("; this constant ran at the base LR, which suits a schedule's peak more than a "
                                 "constant run: against the best constant LR the gain may be smaller" if at_base else ""))


def snippet(study: optuna.Study) -> str | None:
    """Python that builds the winning optimizer and torch scheduler for the stored setup, for stage 3's
    run on the whole training set when it tested the best trial (else the search's run)."""
    tuned = from_study(study)
    if tuned is None:
        return None
    setup = study.user_attrs.get("lrfind_setup", {})
    best = _study.best(study)
    total = snippet_steps(study)
    augment = f" with {setup['augment']} augmentation" if setup.get("augment") else ""
    acc = _study.val_acc(best, study)
    score = f"validation accuracy {100 * acc:.2f}%" if acc is not None else f"validation loss {best.value:.4g}"
    run = (f"your training loop {setup.get('model')}" if setup.get("loop") else
           f"{setup.get('model')} on {setup.get('dataset')}{augment}, batch {setup.get('batch_size')}")
    header = (f"# lrfind study {study.study_name!r}: best schedule {tuned.schedule} (trial {best.number}, {score})\n"
              f"# for {run}, {counted(tuned.epochs, 'epoch')} = {total} steps.\n"
              f"# For a run of another length: lrfind show --epochs N --steps-per-epoch M, or lrfind.load_best.\n")
    return header + tuned.snippet(epochs=tuned.epochs, steps_per_epoch=total // tuned.epochs)


def snippet_steps(study: optuna.Study) -> int:
    """The run best_schedule.py is written for: stage 3's on the whole training set if it tested the
    best trial, else the search's own."""
    final = final_of(study, _study.best(study))
    return final.get("setup", {}).get("steps") or study.user_attrs["steps"]


def write(study: optuna.Study, out: Path, *, figures: bool = True) -> list[Path]:
    """best.json, best_schedule.py and (with ``figures``) the figures, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "best.json"]
    write_whole(out / "best.json", json.dumps(best_json(study), indent=2))
    code = snippet(study)
    if code:
        write_whole(out / "best_schedule.py", code)
        written.append(out / "best_schedule.py")
    return written + (draw_figures(study, out) if figures else [])


def draw_figures(study: optuna.Study, out: Path) -> list[Path]:
    """The report's figures, into ``out``; those the study has too few trials for are skipped.
    Uses matplotlib's object API only (no pyplot state), so it may run in a thread of its own."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    figures = [("history.png", _figures.plot_history), ("lr_curves.png", _figures.plot_top_lr_curves),
               ("val_acc.png", _figures.plot_val_acc), ("importances.png", _figures.plot_importances)]
    if _study.metric_of(study) == "loss":
        figures.insert(3, ("val_loss.png", _figures.plot_val_loss))
    for name, draw in figures:
        path = out / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                draw(study, path=path)
                drawn.append(path)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for the figure
                log.info("skipped %s: %s", name, e)
            except Exception as e:              # a bug in a figure must not cost the report
                log.warning("could not draw %s (%s: %s); the study and the other files are fine",
                            name, type(e).__name__, e)
    return drawn


def draw_range_test(result: Any, path: Path) -> Path:
    """The range test's figure, into ``path``: ``result.plot`` for a painter (the path comes back, not
    the Axes)."""
    result.plot(path=path)
    return path


def snapshot(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study, for drawing elsewhere (another thread or process) while the
    stored one changes."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)      # not "A new study created in memory" each time
    try:
        copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    finally:
        optuna.logging.set_verbosity(level)
    copy.add_trials(study.get_trials(deepcopy=False))
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    return copy


__all__ = ["top_table", "verdict", "best_json", "snippet", "write", "draw_figures", "draw_range_test", "snapshot"]
