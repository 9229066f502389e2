"""Export a pretrained backbone (or a linear-probe classifier) as a SavedModel and ONNX, with metadata.

    simsiam-export --checkpoint runs/simsiam/model.keras --output exported/quickstart
    simsiam-export --checkpoint runs/simsiam/linear/classifier.keras --output exported/quickstart_classifier
    simsiam-export --checkpoint runs/simsiam --output exported/quickstart --formats onnx --overwrite
"""

from __future__ import annotations

import argparse
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.export.export import FORMATS, ParityError, check_target, export_checkpoint, parse_formats


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a pretraining run's model.keras (or its directory), or a linear probe's classifier.keras")
    p.add_argument("--output", required=True, help="export folder to create, e.g. exported/NAME")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    return p


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        check_target(args.output, args.overwrite)
        result = export_checkpoint(args.checkpoint, args.output, formats, args.overwrite)
    except USER_ERRORS as error:
        return parser.report(error)
    except ParityError as error:
        print(f"error: export failed the parity check, nothing was written: {error}", file=sys.stderr)
        return 1
    meta = result.metadata
    print(f"exported {meta['kind']} {meta['backbone']} ({meta['image_size']}px) to {result.output_dir} "
          f"in {result.seconds:.1f}s")
    for name, num_bytes in result.sizes.items():
        print(f"  {name}: {_size(num_bytes)}")
    for fmt in formats:
        worst = max(figures["max_rel_diff"] for figures in meta["parity"][fmt].values())
        print(f"  parity {fmt} vs keras: max relative difference {worst:.2e} (tolerance {meta['parity']['tolerance']:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
