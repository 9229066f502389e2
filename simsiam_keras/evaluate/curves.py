"""The paper's Figure 2 panels from runs' history.csv: training loss, z_std and kNN accuracy.

Several runs overlay on the same axes (e.g. with and without stop-gradient, Sec. 4.1), so a
collapse shows at a glance: the loss drops to -1, z_std falls from about 1/sqrt(d) to 0 and
the kNN accuracy stays at chance. Figures are drawn without pyplot (Agg canvas), so plotting
neither needs a display nor changes a notebook's backend.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

HISTORY_FILE = "history.csv"
PANELS = (("loss", "training loss"), ("z_std", "std of l2-normalised z"), ("knn_acc", "kNN accuracy"))


def read_history(run_dir: str | Path) -> dict[str, np.ndarray]:
    """history.csv as float columns; blank cells (epochs without kNN) become NaN."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {HISTORY_FILE} (a run of 0 epochs has no curves)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no epochs recorded")
    try:
        return {c: np.array([float(r[c]) if r[c] not in ("", None) else math.nan for r in rows]) for c in rows[0]}
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a history.csv of numbers ({error})") from None


def projector_dim(run_dir: str | Path) -> int | None:
    """The projector's output dimension d (`proj_dim` in the run's config.json), if recorded."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("proj_dim")
    return int(value) if value else None


def history_figure(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> Figure:
    """A three-panel figure (loss, z_std with the 1/sqrt(d) reference, kNN accuracy), one line per run."""
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ValueError("plot_history needs at least one run directory")
    labels = list(labels) if labels is not None else [r.resolve().name for r in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"labels: got {len(labels)} labels for {len(run_dirs)} runs")
    histories = [read_history(r) for r in run_dirs]

    figure = Figure(figsize=(15, 4), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    for history, label in zip(histories, labels):
        epochs = history.get("epoch", np.arange(1, len(next(iter(history.values()), [])) + 1))
        for ax, (column, _) in zip(axes, PANELS):
            values = history.get(column)
            if values is None:
                continue
            present = ~np.isnan(values)
            # kNN is computed only every few epochs: plot the points that exist, with markers.
            marker = "o" if column == "knn_acc" else None
            ax.plot(epochs[present], values[present], marker=marker, markersize=3, label=label)
    dims = sorted({d for d in map(projector_dim, run_dirs) if d})
    references = [1 / math.sqrt(d) for d in dims]  # z_std of a healthy, uncollapsed z (Sec. 4.1)
    for d, reference in zip(dims, references):
        axes[1].axhline(reference, color="grey", linestyle="--", linewidth=1, label=f"1/sqrt(d), d={d}")
    for ax, (column, title) in zip(axes, PANELS):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            # Healthy z_std hugs the top (1/sqrt(d)) and collapsed z_std the bottom: keep the middle free.
            ax.legend(fontsize="small", loc="center right" if column == "z_std" else "best")
    # Room above 1/sqrt(d) for the legend: the healthy curves sit on that line.
    z_std_top = max([*references, *(np.nanmax(h["z_std"], initial=0) for h in histories if "z_std" in h)])
    axes[1].set_ylim(0, 1.35 * z_std_top if z_std_top > 0 else None)
    return figure


def plot_history(
    run_dirs: Sequence[str | Path], output_png: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Draws `history_figure(run_dirs, labels)` into `output_png` and returns its path."""
    output_png = Path(output_png)
    figure = history_figure(run_dirs, labels)
    if not output_png.parent.is_dir():
        raise FileNotFoundError(f"output {output_png}: no such directory {output_png.parent}")
    if output_png.is_dir():
        raise ValueError(f"output {output_png} is a directory, not an image file")
    figure.savefig(output_png, dpi=100)
    return output_png
