"""Features of every image of a dataset from a pretrained backbone, and a look at what it learned.

    simsiam-embed --checkpoint runs/simsiam --dataset npz:digits.npz --output runs/simsiam/embed
    simsiam-embed --checkpoint exported/simsiam/model.onnx --dataset folder:/data/photos --output embed --map
    tensorboard --logdir runs/simsiam/embed        # the Embedding Projector, with thumbnails

Writes OUTPUT/features.npz (features, labels, ids, split; streamed: memory stays bounded),
the TensorBoard projector files (projector_config.pbtxt, tensor.tsv, metadata.tsv, sprite.png),
neighbours.png, duplicates.csv (pairs above --duplicate-threshold, most similar first),
embed.json and, with --map, map.png (t-SNE; needs scikit-learn). Prints RankMe (the features'
effective rank, a label-free number to compare runs) and the kNN top-1 when labels exist.
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.config import DUPLICATE_THRESHOLD, PROJECTOR_POINTS
from simsiam_keras.evaluate.embed import SPLITS, embed


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory, .keras file, export folder or .onnx file")
    p.add_argument("--dataset", default="synthetic", help="synthetic (default), npz:PATH, folder:PATH or a TFDS name")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--output", required=True, help="folder to create")
    p.add_argument("--split", choices=SPLITS, default="all", help="which split(s) to embed (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--projector-points", type=int, default=PROJECTOR_POINTS,
                   help="points shown in the TensorBoard projector, drawn at random (default %(default)s)")
    p.add_argument("--duplicate-threshold", type=float, default=DUPLICATE_THRESHOLD,
                   help="cosine similarity from which two images are near-duplicates (default %(default)s)")
    p.add_argument("--neighbour-queries", type=int, default=8, help="query images in neighbours.png")
    p.add_argument("--neighbours", type=int, default=8, help="neighbours shown per query")
    p.add_argument("--map", action="store_true", help="also map.png, a t-SNE of the features (needs scikit-learn)")
    p.add_argument("--eval-resize-ratio", type=float, help="evaluation view (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = embed(args.checkpoint, args.dataset, args.output, args.data_dir, args.split, args.batch_size,
                       args.projector_points, args.duplicate_threshold, args.neighbour_queries, args.neighbours,
                       args.map, args.seed, args.eval_resize_ratio, verbose=sys.stdout.isatty())
    except USER_ERRORS as error:
        return parser.report(error)
    s = result.summary
    knn = f"  kNN top-1 {result.knn_top1:.4f}" if result.knn_top1 is not None else ""
    print(f"embedded {result.count:,} images of {s['dataset']} ({'+'.join(s['splits'])}) to {result.feature_dim}-d "
          f"features with the {s['model_kind']} model in {result.seconds:.0f}s; peak memory {result.peak_memory_mb:.0f} MB")
    print(f"RankMe (effective rank) {result.rankme:.2f} of {result.feature_dim}{knn}")
    listed = "" if s["duplicates_listed"] == result.duplicates else f" (the {s['duplicates_listed']:,} most similar listed)"
    print(f"{result.duplicates:,} near-duplicate pairs at cosine >= {s['duplicate_threshold']} in "
          f"{os.path.join(result.output_dir, 'duplicates.csv')}{listed}")
    print(f"projector: tensorboard --logdir {result.output_dir}   ({s['projector_points']:,} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
