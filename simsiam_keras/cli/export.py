"""Export a pretrained backbone (or a linear-probe classifier) as a SavedModel, ONNX, LiteRT or a KerasHub preset.

    simsiam-export --checkpoint runs/simsiam/model.keras --output exported/quickstart
    simsiam-export --checkpoint runs/simsiam/linear/classifier.keras --output exported/quickstart_classifier
    simsiam-export --checkpoint runs/simsiam --output exported/quickstart --formats onnx --overwrite
    simsiam-export --checkpoint runs/simsiam --output exported/edge --formats litert --quantize dynamic,int8
    simsiam-export --checkpoint runs/r50 --output exported/r50_hub --formats keras-hub
"""

from __future__ import annotations

import argparse
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser, add_force_unlock, one_line
from simsiam_keras.evaluate.drift import monitor_drift
from simsiam_keras.export.atomic_folder import check_target
from simsiam_keras.export.export_folder import DEFAULT_FORMATS, FORMATS, parse_formats
from simsiam_keras.export.litert import MAX_KNN_DROP, MIN_MEAN_COSINE, QUANTIZE, DriftError, parse_quantize
from simsiam_keras.export.parity import ParityError
from simsiam_keras.export.run import export_run


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a pretraining run's model.keras (or its directory), or a linear probe's classifier.keras")
    p.add_argument("--output", required=True, help="export folder to create, e.g. exported/NAME")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)} (default {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--quantize", default="",
                   help=f"litert: also write quantised models, a comma-separated subset of {','.join(QUANTIZE)} "
                        "(int8 is calibrated on the run's dataset)")
    p.add_argument("--allow-drift", action="store_true", dest="allow_drift",
                   help=f"write a quantised model even if its features' mean cosine to the float ones is below "
                        f"{MIN_MEAN_COSINE} or its kNN top-1 drops by more than {MAX_KNN_DROP}")
    p.add_argument("--dataset", default=None,
                   help="dataset for int8 calibration and the quantisation check (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    add_force_unlock(p, "OUTPUT.lock (held beside OUTPUT while an export writes it)")
    return p


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        parse_quantize(args.quantize)
        check_target(args.output, args.overwrite)
        result = export_run(args.checkpoint, args.output, formats, args.overwrite, quantize=args.quantize,
                            allow_drift=args.allow_drift, dataset=args.dataset, drift=monitor_drift,
                            force_unlock=bool(args.force_unlock))
    except USER_ERRORS as error:
        return parser.report(error)
    except ParityError as error:
        print(f"error: export failed the parity check, nothing was written: {error}", file=sys.stderr)
        return 1
    except DriftError as error:
        message = one_line(error).replace("`allow_drift`", "--allow-drift")
        print(f"error: nothing was written: {message}", file=sys.stderr)
        return 1
    meta = result.metadata
    print(f"exported {meta['kind']} {meta['backbone']} ({meta['image_size']}px) to {result.output_dir} "
          f"in {result.seconds:.1f}s")
    for name, num_bytes in result.sizes.items():
        print(f"  {name}: {_size(num_bytes)}")
    for fmt in formats:
        worst = max(figures["max_rel_diff"] for figures in meta["parity"][fmt].values())
        print(f"  parity {fmt} vs keras: max relative difference {worst:.2e} (tolerance {meta['parity']['tolerance']:g})")
    for name, figures in meta.get("litert", {}).get("files", {}).items():
        print(f"  litert {name}: {_size(figures['bytes'])}, {figures['latency']['wall_ms']:.2f} ms per image "
              f"({figures['latency']['cpu_ms']:.2f} ms CPU, one thread)")
    for name, figures in meta.get("litert", {}).get("quantized", {}).items():
        knn = (f", kNN top-1 {figures['knn_top1_float']:.3f} -> {figures['knn_top1_quantized']:.3f}"
               if "knn_top1_change" in figures else "")
        print(f"  litert {name} vs float: mean cosine {figures['mean_cosine']:.4f} "
              f"(min {figures['min_cosine']:.4f}){knn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
