"""Linear probe: train a linear classifier on a frozen pretrained backbone and report top-1/top-5.

    python scripts/linear_eval.py --checkpoint runs/simsiam/model.keras --cache-features
    python scripts/linear_eval.py --checkpoint runs/cifar10 --dataset cifar10 --data-dir /data/tfds
    python scripts/linear_eval.py --checkpoint exported/simsiam --dataset folder:/data/pets --recipe sgd

Recipes (simsiam_keras/config.py, LINEAR_EVAL_PRESETS), lr = base lr x batch / 256:
  paper       LARS, base lr 0.02, batch 4096, cosine, 90 epochs, wd 0 (Appendix A)
  lars_code   LARS, base lr 0.1 (the authors' main_lincls.py default)
  sgd         SGD, lr 30 at batch 256, wd 0 (Appendix A's alternative)
  sgd_scaled  SGD, base lr 0.1, batch 4096 (main_lincls.py without --lars)
LARS with trust coefficient 0.001 moves the head by about lr x 0.001 of its norm per step, so it
needs ImageNet-scale step counts; on small datasets use sgd (the default for synthetic data).
Writes OUTPUT/classifier.keras, classifier.json and linear_eval.json, and appends top-1/top-5 to
the run's results.json.
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser, check_output_dir, report_error
from simsiam_keras.config import LINEAR_EVAL_PRESETS, make_linear_eval_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a run directory or its model.keras, an export folder or a SavedModel directory")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic (default), npz:PATH, folder:PATH or a prepared TFDS name; needs labels and a test split")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--recipe", choices=list(LINEAR_EVAL_PRESETS),
                   help="default: sgd for the synthetic dataset, paper otherwise")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="base lr; the applied lr is lr x batch / 256")
    p.add_argument("--cache-features", action="store_true", default=None,
                   help="extract features once (centre crops, no augmentation) and train the head on them")
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="default: RUN/linear next to the checkpoint")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = args.recipe or ("sgd" if args.dataset == "synthetic" else "paper")
    try:
        config = make_linear_eval_config(
            recipe, epochs=args.epochs, batch_size=args.batch_size, base_lr=args.lr,
            cache_features=args.cache_features, seed=args.seed,
        )
        check_output_dir(args.output_dir)
        from simsiam_keras.data.sources import load_source
        from simsiam_keras.evaluate.linear_probe import check_labelled, run_linear_eval
        from simsiam_keras.export.load import load_backbone

        backbone = load_backbone(args.checkpoint)
        source = load_source(args.dataset, backbone.input_shape[1], config.seed, args.data_dir)
        check_labelled(source)
    except USER_ERRORS as error:
        return report_error(error)
    result = run_linear_eval(args.checkpoint, source, config, recipe, args.output_dir, args.dataset, args.data_dir,
                             verbose=0, backbone=backbone)
    print(f"linear probe ({recipe}, {config.epochs} epochs, lr {config.lr:g}, "
          f"{'cached features' if config.cache_features else 'augmented views'}) on {source.name}: "
          f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  ({result.seconds:.0f}s)")
    print(f"backbone unchanged: {result.backbone_unchanged}; classifier saved to "
          f"{os.path.join(result.output_dir, 'classifier.keras')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
