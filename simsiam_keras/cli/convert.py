"""Convert SimSiam weights between PyTorch and Keras; PyTorch itself is not needed.

    simsiam-convert --from-torch checkpoint_0099.pth.tar --output runs/simsiam_in1k_100ep
    simsiam-convert --from-torch checkpoint_0099.pth.tar --output exported/simsiam_in1k --backbone-only
    simsiam-convert --to-torch runs/simsiam --output resnet50_simsiam.pth
    simsiam-convert --to-torch runs/simsiam --output R-50-simsiam.pkl --format detectron2

--from-torch reads facebookresearch/simsiam checkpoints (pretraining and linear eval), mmpretrain
and solo-learn files, and torchvision state_dicts; it writes a run directory (model.keras with
both heads, config.json), a folder with classifier.keras for a linear-eval checkpoint, or with
--backbone-only an export folder as simsiam-export writes it. --to-torch writes a backbone as
torchvision's ResNet state_dict (no fc) or as detectron2's .pkl.
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.convert import from_torch, to_torch
from simsiam_keras.export.parity import ParityError


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-torch", metavar="FILE", help="a PyTorch checkpoint (.pth, .pth.tar, .ckpt)")
    source.add_argument("--to-torch", metavar="RUN_OR_MODEL", help="a run directory or a .keras file")
    p.add_argument("--output", required=True, help="run or export folder (--from-torch), or the .pth/.pkl file (--to-torch)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    into = p.add_argument_group("--from-torch")
    into.add_argument("--backbone-only", action="store_true", help="write an export folder of the backbone (SavedModel, ONNX)")
    into.add_argument("--normalization", help="input normalisation: imagenet, solo_learn_cifar or R,G,B/R,G,B "
                      "(mean/std of pixels/255); default: the source's")
    into.add_argument("--image-size", type=int, help="input size of the built model (default 224, or 32 for a CIFAR stem)")
    into.add_argument("--stem-padding", type=int, help="padding of the first conv (default: the layout's)")
    into.add_argument("--layout", choices=("facebookresearch", "mmpretrain", "solo-learn", "torchvision"),
                      help="the checkpoint's key layout (default: detected from its keys)")
    into.add_argument("--formats", default="saved_model,onnx", help="with --backbone-only: formats to export")
    out = p.add_argument_group("--to-torch")
    out.add_argument("--format", choices=("torchvision", "detectron2"),
                     help="torchvision state_dict (.pth, the default) or detectron2's .pkl")
    return p


def parse_args(parser: ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The flags, with the ones that belong to the other direction refused."""
    args = parser.parse_args(argv)
    only_from = ("backbone_only", "normalization", "image_size", "stem_padding", "layout")
    misplaced = [name for name in only_from if args.to_torch and getattr(args, name) not in (None, False)]
    misplaced += ["format"] if args.from_torch and args.format else []
    if misplaced:
        parser.error(f"--{misplaced[0].replace('_', '-')} does not apply to {'--to-torch' if args.to_torch else '--from-torch'}")
    return args


def _from_torch(args: argparse.Namespace) -> None:
    result = from_torch(args.from_torch, args.output, backbone_only=args.backbone_only,
                        normalization=args.normalization, image_size=args.image_size,
                        stem_padding=args.stem_padding, layout=args.layout, formats=args.formats,
                        overwrite=args.overwrite)
    info, arch = result.info, result.info["architecture"]
    print(f"read {info['layout']} checkpoint {args.from_torch}: {arch['backbone']} width {arch['backbone_width']} at "
          f"{arch['image_size']}px, heads {info['heads']}")
    print(f"  input normalisation ({info['normalization']['name']}): {info['normalization']['formula']}")
    if info["folded_biases"]:
        print(f"  folded into the following BN's running mean: {', '.join(info['folded_biases'])}")
    if info["ignored_keys"]:
        print(f"  not converted: {', '.join(info['ignored_keys'])}")
    what = {"run": "run directory", "classifier": "linear classifier", "export": "export folder"}[result.kind]
    print(f"wrote the {what} {result.output} in {result.seconds:.1f}s")
    if result.export is not None:
        for fmt, figures in result.export.metadata["parity"].items():
            if isinstance(figures, dict) and all(isinstance(v, dict) for v in figures.values()):
                worst = max(v["max_rel_diff"] for v in figures.values())
                print(f"  parity {fmt} vs keras: max relative difference {worst:.2e}")


def _to_torch(args: argparse.Namespace) -> None:
    result = to_torch(args.to_torch, args.output, format=args.format or "torchvision", overwrite=args.overwrite)
    print(f"wrote {result.keys} tensors as a {result.format} checkpoint to {result.output} in {result.seconds:.1f}s")
    norm = result.normalization
    if norm:
        mean = ", ".join(f"{v / 255:.4g}" for v in norm["mean"])
        std = ", ".join(f"{v / 255:.4g}" for v in norm["std"])
        if args.format == "detectron2":
            print(f"  detectron2 config: INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [{', '.join(f'{v:.3f}' for v in norm['mean'])}], "
                  f"MODEL.PIXEL_STD [{', '.join(f'{v:.3f}' for v in norm['std'])}], MODEL.RESNETS.STRIDE_IN_1X1 False")
        else:
            print(f"  feed RGB images as torchvision's Normalize(mean=[{mean}], std=[{std}]) after ToTensor()")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        if os.path.exists(args.output) and not args.overwrite:
            raise FileExistsError(f"output {args.output} already exists; pass `overwrite` to replace it")
        (_from_torch if args.from_torch else _to_torch)(args)
    except USER_ERRORS as error:
        return parser.report(error)
    except ParityError as error:
        print(f"error: the export failed its parity check, nothing was written: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
