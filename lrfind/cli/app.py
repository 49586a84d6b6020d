"""The ``lrfind`` command group and its console entry; the commands register on it."""

from __future__ import annotations

import logging

import click

from lrfind._clock import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lrfind")
@click.option("-v", "--verbose", is_flag=True, help="Log what lrfind does (also after the command: lrfind tune -v).")
def main(verbose: bool) -> None:
    """lrfind: pick the learning rate first, decay second.

    \b
      lrfind range-test --model lenet     suggest a base LR with an LR range test
      lrfind compare runs/sgd runs/adam   lay range tests over each other: which optimizer,
                                          batch size, weight decay?
      lrfind schedules                    list the decay schedules lrfind knows
      lrfind schedules plot --out s.png   draw them
      lrfind tune --trials 50             search the decay with Optuna
      lrfind tune --model net.py:Net --dataset data.py:load --augment flip-crop
                                          ... on your own model and data
      lrfind show                         report a stored study (or a range test's folder)
      lrfind repair                       mend a study's journal file that lrfind refused

    In Python: find_lr(model, loader) on any model and loader; lrfind.tune(...); and
    lrfind.tune_loop(train, ...) to search the decay over a training loop of your own.
    """
    configure_logging(logging.INFO if verbose else logging.WARNING)    # -v: each line says when


def entry() -> None:
    """The ``lrfind`` console script: the command, then an exit that skips the interpreter's
    teardown. After a study on a GPU, freeing the CUDA graphs' pools and the caching allocator's
    blocks one by one took 1.5 s on an H100; the operating system reclaims all of it at once.
    Everything lrfind writes is closed before (files, the study's storage); stdout and stderr are
    flushed. ``LRFIND_CLEAN_EXIT=1`` restores the ordinary exit."""
    import os
    import sys

    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    if os.environ.get("LRFIND_CLEAN_EXIT") == "1":
        sys.exit(code)
    if isinstance(code, str):       # SystemExit("message"): Python prints it and exits with 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
