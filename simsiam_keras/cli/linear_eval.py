"""Linear probe: train a linear classifier on a frozen pretrained backbone and report top-1/top-5.

    simsiam-linear-eval --checkpoint runs/simsiam/model.keras
    simsiam-linear-eval --checkpoint runs/cifar10 --dataset cifar10 --data-dir /data/tfds --recipe paper
    simsiam-linear-eval --checkpoint exported/simsiam --dataset folder:/data/pets --recipe sgd

Recipes (simsiam_keras/config/linear_probe.py, LINEAR_PROBE_RECIPES), lr = base lr x batch / 256:
  paper       LARS, base lr 0.02, batch 4096, cosine, 90 epochs, wd 0 (Appendix A)
  lars_code   LARS, base lr 0.1 (the authors' main_lincls.py default)
  sgd         SGD, lr 30 at batch 256, wd 0 (Appendix A's alternative)
  sgd_scaled  SGD, base lr 0.1, batch 4096 (main_lincls.py without --lars)
  lbfgs       logistic regression on cached, l2-normalised features, full-batch L-BFGS, its L2
              penalty chosen on a held-out 20% of the training split (no epochs, batch or lr)
Without --recipe the data decides: paper when the training split gives at least 128 steps an
epoch at batch 4096 (524,288 images; ImageNet gives 313), else lbfgs. LARS with trust
coefficient 0.001 moves the head by about lr x 0.001 of its norm a step, so it needs
ImageNet-scale step counts. A batch larger than the training split is capped to it (lr scaled
by the linear rule). The kNN top-1 (k=200, T=0.1) of the same features is reported beside the
probe's, with a warning when the probe is more than 5 points below it.
Writes OUTPUT/classifier.keras, classifier.json and linear_eval.json, and appends top-1/top-5 to
the run's results.json.
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.config import (
    LINEAR_PROBE_RECIPES,
    LinearProbeConfig,
    default_linear_probe_recipe,
    make_linear_probe_config,
)
from simsiam_keras.data.sources import eval_data
from simsiam_keras.evaluate.linear_probe import linear_probe_of_run
from simsiam_keras.run_files import check_output_dir
from simsiam_keras.saved_run import load_backbone


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a run directory or its model.keras, an export folder or a SavedModel directory")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic (default), npz:PATH, folder:PATH or a prepared TFDS name; needs labels and a test split")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--recipe", choices=list(LINEAR_PROBE_RECIPES),
                   help="default: chosen from the training split's size (paper at ImageNet scale, else lbfgs)")
    p.add_argument("--epochs", type=int, help="gradient recipes only")
    p.add_argument("--batch-size", type=int, help="gradient recipes only; capped to the training split")
    p.add_argument("--lr", dest="base_lr", type=float, help="base lr; the applied lr is lr x batch / 256")
    p.add_argument("--cache-features", action="store_true", default=None,
                   help="extract features once (centre crops, no augmentation) and train the head on them")
    p.add_argument("--eval-resize-ratio", type=float,
                   help="evaluation view: shorter side resized to crop x this, then the centre crop "
                        "(default: the checkpoint's run's, else the paper's 256/224)")
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="default: RUN/linear next to the checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_output_dir(args.output_dir)
        data = eval_data(args.dataset, args.data_dir, LinearProbeConfig.seed if args.seed is None else args.seed)
        if args.recipe:
            recipe, reason = args.recipe, "asked for with --recipe"
        else:
            recipe, reason = default_linear_probe_recipe(data.bank.size)
        config = make_linear_probe_config(
            recipe, epochs=args.epochs, batch_size=args.batch_size, base_lr=args.base_lr,
            cache_features=args.cache_features, eval_resize_ratio=args.eval_resize_ratio, seed=args.seed,
        )
        backbone = load_backbone(args.checkpoint)
    except USER_ERRORS as error:
        return parser.report(error)
    print(f"recipe {recipe}: {reason}")
    result = linear_probe_of_run(args.checkpoint, data, config, recipe, args.output_dir, verbose=0, backbone=backbone,
                                 reason=reason)
    record = result.record
    how = (f"l2 {record['lbfgs']['l2']:g}, {record['lbfgs']['iterations']} L-BFGS iterations" if config.full_batch
           else f"{config.epochs} epochs, batch {record['batch_size']}, lr {record['lr']:g}")
    print(f"linear probe ({recipe}, {how}, {'cached features' if config.cache_features else 'augmented views'}) "
          f"on {data.name}: top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  kNN top-1 {result.knn_top1:.4f}  "
          f"({result.seconds:.0f}s)")
    print(f"backbone unchanged: {result.backbone_unchanged}; classifier saved to "
          f"{os.path.join(result.output_dir, 'classifier.keras')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
