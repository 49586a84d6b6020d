"""``lrfind schedules`` and ``lrfind schedules plot``: the registry listed and drawn."""

from __future__ import annotations

from pathlib import Path

import click

from lrfind.cli.app import main
from lrfind.cli.options import PathGiven, UserError, figure_file, schedule_name, verbose_option


def _parse_value(text: str):
    """A --param value: int, float, list of ints (``100,200``), true or false, or a word."""
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_params(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r}: write NAME=VALUE, e.g. --param gamma=0.5")
        out[name.strip()] = _parse_value(value.strip())
    return out


@main.group("schedules", invoke_without_command=True, epilog="""\b
Examples:
  lrfind schedules
  lrfind schedules plot --out schedules.png
  lrfind schedules plot step cosine --steps 300
  lrfind schedules plot multistep --param milestones=100,200 --param gamma=0.3 --out ms.png
""")
@click.pass_context
@verbose_option
def schedules(ctx: click.Context) -> None:
    """List the decay schedules lrfind searches, with their parameters (in optimizer steps).

    Every schedule can be rebuilt as torch's own scheduler; those marked (+warmup) also take
    `warmup` and `warmup_start` for a linear warmup in front.
    """
    if ctx.invoked_subcommand is not None:
        return
    from lrfind.schedules import SCHEDULES, WARMUP_PARAMS

    for schedule in SCHEDULES.values():
        tag = " (+warmup)" if schedule.warmup_allowed else ""
        click.echo(f"{click.style(schedule.name, bold=True)}{tag}  [{schedule.torch_name}]  {schedule.description}")
        for p in schedule.params:
            default = "" if p.required else f" (default {p.default!r})"
            click.echo(f"    {p.name:<17}{p.doc}{default}")
    click.echo("\n(+warmup): " + "; ".join(f"{p.name}: {p.doc} (default {p.default!r})" for p in WARMUP_PARAMS))


@schedules.command("plot")
@click.argument("names", nargs=-1)
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=4), help="Steps in the run.")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1),
              help="Steps per epoch (dotted lines; plateau reports). Default: steps/10.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a parameter (repeatable; lists as 100,200). Needs exactly one NAME.")
@click.option("--out", default=Path("schedules.png"), show_default=True, type=PathGiven(dir_okay=False),
              callback=figure_file, help="Figure file to write (PNG; .pdf or .svg by their extension).")
@verbose_option
def schedules_plot(names: tuple[str, ...], steps: int, steps_per_epoch: int | None, params: tuple[str, ...],
                   out: Path) -> None:
    """Draw the LR curves of NAMES (default: all schedules) in one figure.

    Without --param each schedule is drawn with example parameters that show its shape. The
    plateau schedule is driven by a made-up validation loss that stops improving half-way.
    """
    import numpy as np

    from lrfind.plots.figures import plot_schedules
    from lrfind.schedules import SCHEDULES, get_schedule, params_text

    try:
        chosen = [get_schedule(schedule_name(n)) for n in names] or list(SCHEDULES.values())
    except ValueError as e:
        raise UserError(str(e)) from None
    given = _parse_params(params)
    if given and len(chosen) != 1:
        raise UserError(f"--param needs exactly one schedule name, got {len(chosen)}")
    per_epoch = steps_per_epoch or max(1, steps // 10)
    reports = steps // per_epoch + 1
    metrics = [max(1.0 / (1 + i), 0.4) for i in range(reports)]   # improves, then stalls
    curves, momenta = {}, {}
    for schedule in chosen:
        p = {**schedule.example(steps, per_epoch), **given}
        if schedule.needs_metric and "interval" not in given:
            p["interval"] = per_epoch   # one metric report per epoch
        try:
            factors = schedule.factor(np.arange(steps), steps, metrics=metrics, **p)
        except ValueError as e:
            raise UserError(str(e)) from None
        momentum = schedule.momentum(np.arange(steps), steps, **p)
        if momentum is not None:
            momenta[schedule.name] = momentum
        caption = params_text({"warmup": 0, **p}, sep=", ")
        curves[schedule.name] = (factors, caption)
    plot_schedules(curves, path=out, steps_per_epoch=per_epoch, momenta=momenta)
    click.echo(f"wrote {out}")
