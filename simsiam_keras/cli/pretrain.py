"""Pretrain SimSiam. With no arguments: about a minute and a half at most on the embedded synthetic dataset (2-core CPU).

    simsiam-pretrain
    simsiam-pretrain --dataset cifar10 --preset cifar --strategy mirrored
    simsiam-pretrain --dataset imagenet2012 --strategy mirrored --data-dir /data/tfds
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser, add_force_unlock, add_preemption_signal
from simsiam_keras.config import AUGMENT_ON, CACHE_DECODED, PRESETS, SimSiamConfig, make_config
from simsiam_keras.method.loss import SIMILARITIES
from simsiam_keras.train.distribute import STRATEGIES
from simsiam_keras.train.backup import BackupError
from simsiam_keras.train.divergence import DivergenceError
from simsiam_keras.train.preemption import Preempted
from simsiam_keras.train.pretrain import MIXED_PRECISION, PretrainResult, pretrain

# A NaN or Inf loss (or weights): training stopped at that step.
EXIT_DIVERGED = 3
# A backup that cannot be written (a full disk, an I/O error): sysexits' EX_IOERR.
EXIT_BACKUP_FAILED = 74
# What ends a run without a bug: a preemption notice (after its backup), a diverged loss, a backup that cannot be written.
RUN_STOPS = (Preempted, DivergenceError, BackupError)


def report_stop(stop: Preempted | DivergenceError | BackupError) -> int:
    """The stop's one line on stderr; the status a wrapper acts on: 128 + the signal, EXIT_DIVERGED or EXIT_BACKUP_FAILED."""
    if isinstance(stop, Preempted):
        print(stop, file=sys.stderr)
        return stop.exit_status
    print(f"error: {stop}", file=sys.stderr)
    return EXIT_DIVERGED if isinstance(stop, DivergenceError) else EXIT_BACKUP_FAILED


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="synthetic (default), npz:PATH, folder:PATH or a prepared TFDS name such as cifar10")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--cache-decoded", choices=CACHE_DECODED,
                   help="keep decoded images in memory after epoch 1 (auto: when a folder fits in 2 GB)")
    p.add_argument("--data-service", help="grpc://HOST:PORT of a tf.data service dispatcher to run the input pipeline")
    p.add_argument("--augment-on", choices=AUGMENT_ON,
                   help="where flip, colour jitter, grayscale and blur run: host (the input pipeline, the default) "
                        "or device (the train step, on its GPU/TPU; the CPUs only decode and crop)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="paper recipe to start from (default: quickstart for synthetic data, imagenet otherwise)")
    p.add_argument("--backbone", help="resnet50, resnet18_cifar or a keras.applications name")
    p.add_argument("--backbone-width", type=int, help="base width of the ResNet (64 in the paper)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size, over all replicas")
    p.add_argument("--epochs", type=int, help="0 saves the randomly initialised model")
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data")
    p.add_argument("--base-lr", type=float, help="lr = base_lr x batch / 256")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--knn-every", type=int, help="kNN monitor period in epochs; 0 turns it off")
    p.add_argument("--eval-resize-ratio", type=float,
                   help="evaluation view: shorter side resized to image size x this, then the centre crop "
                        "(the paper's 256/224; 1.0 in the cifar and quickstart presets)")
    p.add_argument("--output-dir", help="run directory (default runs/simsiam)")
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--cpu-replicas", type=int, help="split the CPU into N logical devices")
    p.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    p.add_argument("--mixed-precision", choices=sorted(MIXED_PRECISION))
    p.add_argument("--jit-compile", action="store_true", default=None,
                   help="XLA-compile the train step (one replica, or each replica's step on several GPUs)")
    p.add_argument("--steps-per-execution", type=int,
                   help="train steps per call of the compiled function (must divide the epoch and the backup interval)")
    resume = p.add_argument_group("preemption (re-running the same command resumes from OUTPUT_DIR/backup)")
    resume.add_argument("--backup-every-steps", type=int, help="back up every N global steps, and at each epoch end (0: epoch ends only)")
    resume.add_argument("--resume", action="store_true", default=None, help="fail unless there is a backup to resume from")
    resume.add_argument("--restart", action="store_true", default=None,
                        help="start afresh over OUTPUT_DIR, discarding its backups and history rows")
    add_preemption_signal(resume)
    add_force_unlock(resume, "OUTPUT_DIR/run.lock")
    resume.add_argument("--deterministic", action="store_true", default=None,
                        help="deterministic ops: a resumed run matches an uninterrupted one bit for bit (slower)")
    ablations = p.add_argument_group("ablations (paper Sec. 4)")
    ablations.add_argument("--no-stop-gradient", dest="stop_gradient", action="store_false", default=None)
    ablations.add_argument("--no-predictor", dest="use_predictor", action="store_false", default=None)
    ablations.add_argument("--predictor-lr", choices=("fixed", "cosine"))
    ablations.add_argument("--similarity", choices=SIMILARITIES)
    ablations.add_argument("--asymmetric", dest="symmetric", action="store_false", default=None)
    ablations.add_argument("--proj-dim", type=int, help="output dimension d of the projector (App. B)")
    ablations.add_argument("--proj-hidden-dim", type=int)
    ablations.add_argument("--pred-hidden-dim", type=int, help="predictor bottleneck, d/4 in the paper")
    ablations.add_argument("--proj-output-affine", action="store_true", default=None,
                           help="learnable scale and offset in the projector's output BN (Table 3c; off in the authors' code)")
    hypothesis = p.add_argument_group("the EM hypothesis' proof of concept (paper Sec. 5.2)")
    hypothesis.add_argument("--alternation-steps", type=int, metavar="K",
                            help="take the targets of each block of K steps from the encoder's weights at its start "
                                 "(1: SimSiam; the paper: 10, 100, or the steps of an epoch)")
    hypothesis.add_argument("--target-momentum", type=float, metavar="M",
                            help="per-image targets averaged over augmentations, eta <- M eta + (1-M) F(T'(x)) "
                                 "(the paper: 0.8 with --no-predictor)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    preset = args.pop("preset")
    try:
        config = make_config(preset, **args)
        result = pretrain(config)
    except USER_ERRORS as error:
        return parser.report(error)
    except RUN_STOPS as stop:
        return report_stop(stop)
    print(closing_lines(result, config))
    return 0


def closing_lines(result: PretrainResult, config: SimSiamConfig) -> str:
    """Two lines: what the run did (kNN before and after, where its files are), and the commands to run next."""
    run, before, after = result.output_dir, result.knn_before, result.knn_after
    knn = ""
    if before is not None and after is not None:
        knn = f"kNN accuracy {before:.3f} at random init -> {after:.3f} after training ({after - before:+.3f}); "
    elif before is not None:
        knn = f"kNN accuracy {before:.3f} at random init; "
    elif after is not None:
        knn = f"kNN accuracy {after:.3f} after training; "
    files = ", ".join(name for name in ("model.keras", "curves.png", "history.csv", "config.json")
                      if os.path.exists(os.path.join(run, name)))
    checkpoint = shlex.quote(run)
    data = f" --dataset {shlex.quote(config.dataset)}" + (f" --data-dir {shlex.quote(config.data_dir)}" if config.data_dir else "")
    export = shlex.quote(os.path.join("exported", os.path.basename(os.path.normpath(run))))
    return (f"{knn}{run} holds {files}\n"
            f"next: simsiam-knn-eval --checkpoint {checkpoint}{data} (or simsiam-linear-eval) to evaluate, "
            f"simsiam-export --checkpoint {checkpoint} --output {export} to export, "
            f"simsiam-embed --checkpoint {checkpoint}{data} --output {shlex.quote(os.path.join(run, 'embeddings'))} to embed")


if __name__ == "__main__":
    sys.exit(main())
