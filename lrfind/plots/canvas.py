"""Where a figure is drawn and how it is written, for every figure of lrfind.

With ``path`` and no ``ax``, a figure is drawn on a bare ``matplotlib.figure.Figure`` (no pyplot,
no GUI backend, nothing left open). Without ``path``, pyplot makes the figure so that notebooks
display it. Nothing here calls ``plt.show()``.

matplotlib is imported where a figure is made, not with this module: ``import lrfind`` stays
quick for the many runs that draw nothing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lrfind._files import write_whole

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_axes(path: str | Path | None, *, nrows: int = 1, ncols: int = 1, figsize=(7, 4.5), layout="constrained",
             bare: bool = False):
    """A figure and its axes: a bare Figure when saving to ``path`` (or ``bare``), a pyplot figure
    otherwise. ``layout=None`` leaves the margins to the caller: constrained layout measures every
    tick label, which costs most of a second on log axes spanning many decades."""
    if path is not None or bare:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        axes = fig.subplots(nrows, ncols, squeeze=False)
    else:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout=layout)
    return fig, axes


def target(ax, path, what: str):
    """``(fig, ax, path)`` for a plot method: a new figure when ``ax`` is None (``fig`` is None
    when the caller gave the Axes). A file name given where the Axes goes
    (``result.plot("lr.png")``) is taken as ``path``."""
    if isinstance(ax, (str, os.PathLike)):
        if path is not None:
            raise TypeError(f"{what}: got two files, {str(ax)!r} as the Axes and path={str(path)!r}; give one, "
                            f"as path=...")
        ax, path = None, ax
    if ax is None:
        fig, axes = new_axes(path)
        return fig, axes[0, 0], path
    if not callable(getattr(ax, "plot", None)) or not hasattr(ax, "figure"):
        raise TypeError(f"{what}: ax must be a matplotlib Axes (or a file name to write the figure to), "
                        f"not {type(ax).__name__} {ax!r:.60}")
    return None, ax, path


def png(draw: Callable[["Axes"], object]) -> bytes:
    """The PNG of what ``draw(ax)`` draws on a bare figure (no pyplot): for Jupyter's ``_repr_png_``."""
    figure, axes = new_axes(None, bare=True)
    draw(axes[0, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def save(fig, path: str | Path) -> Path:
    """``fig`` into ``path``, in the format its extension names (PNG without one), written whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or None, dpi=120)
    return write_whole(path, buffer.getvalue())


__all__ = ["new_axes", "target", "png", "save"]
