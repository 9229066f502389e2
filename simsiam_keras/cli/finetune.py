"""Fine-tune a pretrained backbone with few labels (SimCLR Appendix B.5), or the same network from scratch.

    simsiam-finetune --checkpoint runs/simsiam --dataset npz:digits.npz --labels 10% --output-dir runs/ft10
    simsiam-finetune --checkpoint runs/simsiam --dataset npz:digits.npz --labels 10% --from-scratch --output-dir runs/sc10
    simsiam-finetune --checkpoint runs/in1k --dataset imagenet2012 --labels-file 1percent.txt --output-dir runs/ft1

The whole backbone plus a linear head trains end to end on a class-balanced, seeded labelled
subset of the training split: SGD with Nesterov momentum 0.9, lr 0.05 x batch / 256, cosine decay,
no weight decay, no warm-up, random resized crop + flip, BatchNorm in training mode; 60 epochs
for 1% of the labels, 30 for 10%, raised on small sets until the run takes --min-steps steps.
Without --from-scratch the linear probe of the same encoder on the same labels is reported beside
it (small sets). Writes OUTPUT/classifier.keras (+ classifier.json, for simsiam-export),
labelled_indices.txt, finetune.json and TensorBoard logs; records top-1/top-5 in the run's
results.json. Running the same command again after a kill or a preemption notice (SIGTERM, SIGINT,
--preemption-signal: exit status 128 + its number) resumes from OUTPUT/backup; one process at a time
writes OUTPUT (OUTPUT/run.lock), as in pretraining (docs/preemption.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser, add_force_unlock, add_preemption_signal
from simsiam_keras.cli.pretrain import RUN_STOPS, report_stop
from simsiam_keras.config import FinetuneConfig, make_finetune_config
from simsiam_keras.train.distribute import STRATEGIES
from simsiam_keras.train.finetune import finetune
from simsiam_keras.train.pretrain import MIXED_PRECISION


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(v) for v in text.split(","))
    return low, high


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a pretraining run (or a converted one) or its model.keras")
    p.add_argument("--dataset", default="synthetic", help="synthetic (default), npz:PATH, folder:PATH or a TFDS name")
    p.add_argument("--data-dir", help="TFDS data directory")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", default="10%", help="P%% of each class, or N-per-class (default %(default)s)")
    labels.add_argument("--labels-file", help="one training image a line: its index or file name [, class name]")
    p.add_argument("--from-scratch", action="store_true",
                   help="train the same network from random initialisation: the baseline")
    p.add_argument("--output-dir", help="default: RUN/finetune-LABELS (RUN/scratch-LABELS with --from-scratch)")
    p.add_argument("--epochs", type=int, help="default: 60 for up to 1%% of the labels, else 30")
    p.add_argument("--min-steps", type=int, help=f"epochs are raised to reach this (default {FinetuneConfig.min_steps})")
    p.add_argument("--batch-size", type=int, help=f"capped to the labelled images (default {FinetuneConfig.batch_size})")
    p.add_argument("--lr", dest="base_lr", type=float, help=f"base lr; applied lr x batch / 256 (default {FinetuneConfig.base_lr})")
    p.add_argument("--momentum", type=float)
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--crop-scale", type=_pair, help="random resized crop's area range, e.g. 0.08,1")
    p.add_argument("--eval-resize-ratio", type=float, help="evaluation view (default: the run's)")
    p.add_argument("--no-probe", dest="probe", action="store_false", default=None,
                   help="skip the linear probe reported beside fine-tuning")
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--cpu-replicas", type=int)
    p.add_argument("--mixed-precision", choices=list(MIXED_PRECISION))
    p.add_argument("--backup-every-steps", type=int)
    add_preemption_signal(p)
    add_force_unlock(p, "OUTPUT_DIR/run.lock")
    p.add_argument("--export", help="also export the classifier (SavedModel + ONNX) to this new folder")
    p.add_argument("--seed", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    labels = f"file:{args.labels_file}" if args.labels_file else args.labels
    try:
        config = make_finetune_config(
            epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size, base_lr=args.base_lr,
            momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay, crop_scale=args.crop_scale,
            eval_resize_ratio=args.eval_resize_ratio, strategy=args.strategy, cpu_replicas=args.cpu_replicas,
            mixed_precision=args.mixed_precision, backup_every_steps=args.backup_every_steps, seed=args.seed,
        )
        result = finetune(args.checkpoint, args.dataset, labels, args.output_dir, config, args.from_scratch,
                          args.data_dir, probe=args.probe, export=args.export, verbose="auto",
                          force_unlock=bool(args.force_unlock), preemption_signal=args.preemption_signal)
    except USER_ERRORS as error:
        return parser.report(error)
    except RUN_STOPS as stop:
        return report_stop(stop)
    record = result.record
    what = "from scratch" if args.from_scratch else "fine-tuned"
    used = record["labels"]
    print(f"{what} on {used['images']} labelled images ({100 * used['fraction']:.3g}% of {record['dataset']} train, "
          f"{record['recipe']['epochs']} epochs, {record['recipe']['steps']} steps, batch {record['recipe']['batch_size']}): "
          f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f} on {record['test_images']} {record['split']} images "
          f"({record['train_seconds']:.0f}s)")
    if record["linear_probe"]:
        probe = record["linear_probe"]
        print(f"linear probe of the same encoder on the same labels: top-1 {probe['top1']:.4f}  top-5 {probe['top5']:.4f}")
    print(f"classifier saved to {os.path.join(result.output_dir, 'classifier.keras')}"
          + (f"; exported to {record['export']}" if record.get("export") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
