"""lrfind's figures, drawn from plain data: arrays, and the records of ``lrfind.plots.records``.

Nothing here reads a study, a range test or a schedule, so every wing above may draw with it:

- ``canvas``: where a figure is drawn (a bare Figure to a file, pyplot for a notebook) and how it
  is written;
- ``figures``: the schedules' LR curves and one schedule over runs of different lengths;
- ``study`` and ``lr_curves``: the study's history, per-epoch scores, importances and top LR curves
  (``lrfind.study.figures`` reads the records out of a study);
- the range test draws its own figures (``lrfind.rangetest.plot``) on this canvas.
"""
