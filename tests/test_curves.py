"""Figure 2 panels from history.csv: loss, z_std with its 1/sqrt(d) line, kNN accuracy; the plot script."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from simsiam_keras.cli.plot import main
from simsiam_keras.evaluate.curves import history_figure, settings_labels
from simsiam_keras.train.history import HistoryCSV


def _fake_run(path: Path, proj_dim: int, rows: list[dict]) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"proj_dim": proj_dim}))
    history = HistoryCSV(str(path / "history.csv"))
    history.on_train_begin()
    for epoch, logs in enumerate(rows):
        history.on_epoch_end(epoch, logs)
    return path


@pytest.fixture
def two_runs(tmp_path):
    healthy = _fake_run(tmp_path / "stop_grad", 64, [
        {"loss": -0.3, "z_std": 0.12}, {"loss": -0.6, "z_std": 0.12, "knn_acc": 0.4},
        {"loss": -0.7, "z_std": 0.12}, {"loss": -0.8, "z_std": 0.12, "knn_acc": 0.6},
    ])
    collapsed = _fake_run(tmp_path / "no_stop_grad", 64, [
        {"loss": -0.9, "z_std": 0.01, "knn_acc": 0.1}, {"loss": -1.0, "z_std": 0.0, "knn_acc": 0.1},
    ])
    return healthy, collapsed


def _main():
    return main


def test_three_panels_overlay_the_runs_with_the_reference_line(two_runs):
    figure = history_figure(two_runs)
    loss, z_std, knn = figure.axes
    assert len(figure.axes) == 3
    for ax in (loss, z_std, knn):
        assert [line.get_label() for line in ax.lines[:2]] == ["stop_grad", "no_stop_grad"]
        assert ax.get_legend() is not None
    np.testing.assert_array_equal(loss.lines[0].get_ydata(), [-0.3, -0.6, -0.7, -0.8])
    reference = z_std.lines[2]
    assert reference.get_ydata()[0] == pytest.approx(1 / math.sqrt(64))
    assert z_std.get_ylim()[1] > 1 / math.sqrt(64), "the reference line must be in view"
    # Epochs without kNN are blanks in history.csv: only the measured points are drawn.
    np.testing.assert_array_equal(knn.lines[0].get_xdata(), [2, 4])
    np.testing.assert_array_equal(knn.lines[0].get_ydata(), [0.4, 0.6])


def test_script_writes_the_figure_for_two_runs(two_runs, tmp_path, capsys):
    output = tmp_path / "fig2.png"
    assert _main()([*map(str, two_runs), "--output", str(output), "--labels", "stop-grad", "no stop-grad"]) == 0
    pixels = imread(output)
    assert pixels.shape[:2] == (400, 1500)  # 15 x 4 inches at 100 dpi: three panels side by side
    assert str(output) in capsys.readouterr().out
    # The script draws exactly the library's figure of those runs, with the labels it was given.
    history_figure(two_runs, ["stop-grad", "no stop-grad"]).savefig(tmp_path / "expected.png", dpi=100)
    history_figure(two_runs).savefig(tmp_path / "default_labels.png", dpi=100)
    np.testing.assert_array_equal(pixels, imread(tmp_path / "expected.png"))
    assert not np.array_equal(pixels, imread(tmp_path / "default_labels.png")), "the labels did not reach the figure"


def test_runs_are_labelled_by_the_settings_in_which_they_differ(tmp_path):
    """Sec. 5.2's variants beside SimSiam: each line says what its run changed."""
    rows = [{"loss": -0.5, "z_std": 0.1}]
    runs = []
    for name, settings in [("simsiam", {}), ("alt10", {"alternation_steps": 10}),
                           ("ma", {"use_predictor": False, "target_momentum": 0.8})]:
        runs.append(_fake_run(tmp_path / name, 64, rows))
        config = {"proj_dim": 64, "alternation_steps": 1, "use_predictor": True, "target_momentum": None,
                  "output_dir": str(runs[-1]), **settings}
        (runs[-1] / "config.json").write_text(json.dumps(config))
    expected = ["simsiam", "alternation_steps 10", "target_momentum 0.8, use_predictor False"]
    assert settings_labels(runs) == expected
    assert [line.get_label() for line in history_figure(runs).axes[0].lines] == expected


@pytest.mark.parametrize(
    "args, message",
    [(["{missing}"], "no history.csv"), (["{run}", "--labels", "a", "b"], "--labels: got 2 labels for 1 runs")],
)
def test_script_mistakes_get_one_line(two_runs, tmp_path, capsys, args, message):
    args = [a.format(missing=tmp_path / "nope", run=two_runs[0]) for a in args]
    assert _main()(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_pretraining_draws_the_curves_into_its_run_directory(tiny_config, tmp_path):
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.data.synthetic import make_synthetic
    from simsiam_keras.train.pretrain import pretrain

    tiny_config.output_dir = str(tmp_path / "run")
    tiny_config.epochs, tiny_config.steps_per_epoch = 1, 2
    pretrain(tiny_config, from_arrays("synthetic", **make_synthetic(64, 16, image_size=16)), verbose=0)
    assert imread(tmp_path / "run" / "curves.png").shape[:2] == (400, 1500)
