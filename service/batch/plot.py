"""``--plot``: history and forecast of a few series in one PNG (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from statecast.service.batch.frames import Columns


def plot(history: pd.DataFrame, forecasts: pd.DataFrame, model: str, path: str | Path,
         columns: Columns | None = None, count: int = 4) -> Path:
    """Draw the first ``count`` series (by id): history as a line, forecast dashed, and
    each interval the forecasts hold (``<model>-lo-<level>``/``-hi-<level>``) shaded, the
    wider ones lighter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = columns or Columns()
    prefix = f"{model}-lo-"
    levels = sorted((name.removeprefix(prefix) for name in forecasts.columns
                     if name.startswith(prefix)), key=float, reverse=True)
    ids = sorted(forecasts[columns.id].unique(), key=str)[:count]
    figure, axes = plt.subplots(len(ids) or 1, 1, figsize=(9, 2.4 * max(1, len(ids))),
                                squeeze=False)
    for axis, series in zip(axes[:, 0], ids, strict=False):
        past = history[history[columns.id] == series].sort_values(columns.time)
        future = forecasts[forecasts[columns.id] == series].sort_values(columns.time)
        axis.plot(past[columns.time], past[columns.target], label="history")
        for shade, level in enumerate(levels):
            axis.fill_between(future[columns.time], future[f"{prefix}{level}"],
                              future[f"{model}-hi-{level}"], color="tab:orange",
                              alpha=0.15 + 0.15 * shade, linewidth=0, label=f"{level}%")
        axis.plot(future[columns.time], future[model], "--", label=f"{model} forecast")
        axis.set_title(str(series), fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
