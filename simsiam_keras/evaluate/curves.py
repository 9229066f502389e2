"""The paper's Figure 2 panels from runs' history.csv: training loss, z_std and kNN accuracy.

Several runs overlay on the same axes (e.g. with and without stop-gradient, Sec. 4.1), so a
collapse shows at a glance: the loss drops to -1, z_std falls from about 1/sqrt(d) to 0 and
the kNN accuracy stays at chance. Each run is labelled by the settings in which it differs from
the others (its config.json), e.g. "alternation_steps 10" beside SimSiam (Sec. 5.2). Figures are drawn without pyplot (Agg canvas), so plotting
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

from simsiam_keras.config import SimSiamConfig

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


def run_config(run_dir: str | Path) -> dict:
    """The run's settings (its config.json), or {} for a directory without one."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def projector_dim(run_dir: str | Path) -> int | None:
    """The projector's output dimension d (`proj_dim` in the run's config.json), if recorded."""
    value = run_config(run_dir).get("proj_dim")
    return int(value) if value else None


# Settings that differ between any two runs without making them different experiments.
_NOT_SETTINGS = {"output_dir", "data", "data_dir", "resume"}


def settings_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Each run's settings where the runs differ, those of SimSiam's defaults left out: "alternation_steps 10",
    "use_predictor False, target_momentum 0.8". A run with none to show (SimSiam itself, or a directory
    without config.json) is labelled by its directory's name."""
    configs = [run_config(r) for r in run_dirs]
    defaults = SimSiamConfig().to_dict()
    keys = sorted({k for c in configs for k in c} - _NOT_SETTINGS)
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    labels = []
    for run_dir, config in zip(run_dirs, configs):
        shown = [f"{k} {config[k]}" for k in differing if k in config and config[k] != defaults.get(k)]
        labels.append(", ".join(shown) or Path(run_dir).resolve().name)
    return labels


def history_figure(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> Figure:
    """A three-panel figure (loss, z_std with the 1/sqrt(d) reference, kNN accuracy), one line per run.

    Without `labels`, each run's are its settings (`settings_labels`).
    """
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ValueError("plot_history needs at least one run directory")
    labels = list(labels) if labels is not None else settings_labels(run_dirs)
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
