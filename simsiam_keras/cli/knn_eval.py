"""Weighted kNN top-1 (k=200, T=0.1, cosine) of a frozen backbone: a run, an export or an ONNX file.

    simsiam-knn-eval --checkpoint runs/simsiam
    simsiam-knn-eval --checkpoint exported/resnet18/model.onnx --dataset npz:data.npz
    simsiam-knn-eval --checkpoint runs/in1k --dataset imagenet2012 --data-dir /data/tfds

The bank is the dataset's train split, the queries its test (or validation) split; images
stream through the model batch by batch. Writes a JSON result and appends it to the run's
results.json.
"""

from __future__ import annotations

import argparse
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.config import SimSiamConfig
from simsiam_keras.evaluate.knn_eval import knn_eval


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="run directory, .keras file, export folder, SavedModel directory or .onnx file")
    p.add_argument("--dataset", default="synthetic", help="synthetic (default), npz:PATH, folder:PATH or a TFDS name")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--k", type=int, default=SimSiamConfig.knn_k, help="neighbours (default %(default)s)")
    p.add_argument("--temperature", type=float, default=SimSiamConfig.knn_temperature,
                   help="vote weight exp(sim / T) (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--format", choices=("saved_model", "onnx"), help="which model of an export folder (default saved_model)")
    p.add_argument("--output", help="JSON result (default: knn_<dataset>.json in the run directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = knn_eval(
            args.checkpoint, args.dataset, data_dir=args.data_dir, k=args.k, temperature=args.temperature,
            batch_size=args.batch_size, kind=args.format, output=args.output,
        )
    except USER_ERRORS as error:
        return parser.report(error)
    print(f"kNN top-1 {result['value']:.4f} on {result['dataset']} {result['split']} "
          f"({result['query_images']} queries, {result['bank_images']} bank images, k={args.k}, T={args.temperature})")
    print(f"wrote {result['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
