"""Figure 2 of the paper from pretraining runs: loss, z_std (with 1/sqrt(d)) and kNN accuracy.

    simsiam-plot runs/simsiam
    simsiam-plot runs/simsiam runs/no_stop_grad --labels "stop-grad" "no stop-grad" --output fig2.png
    simsiam-plot runs/simsiam runs/alt10 runs/nopred_ma08 --output sec5.png   # labelled by their settings
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.evaluate.curves import plot_history


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="pretraining run directories (with history.csv)")
    p.add_argument("--output", help="PNG to write (default: RUN_DIR/curves.png for one run, curves.png for several)")
    p.add_argument("--labels", nargs="+", help="legend labels, one per run (default: the settings in which the runs differ, "
                   "else the directory name)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output or (Path(args.run_dirs[0]) / "curves.png" if len(args.run_dirs) == 1 else "curves.png"))
    try:
        path = plot_history(args.run_dirs, output, args.labels)
    except USER_ERRORS as error:
        return parser.report(error)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
