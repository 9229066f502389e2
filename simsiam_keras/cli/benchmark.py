"""Measure SimSiam throughput and host memory on this machine.

    simsiam-benchmark train                      # cifar preset: resnet18_cifar width 64, 32 px, batch 256
    simsiam-benchmark train --preset imagenet    # imagenet preset: resnet50 width 64, 224 px, batch 32
    simsiam-benchmark train --backbone-width 16 --peer torch   # vs the same step in PyTorch
    simsiam-benchmark train --augment-on device  # the step draws flip, jitter, grayscale and blur itself
    simsiam-benchmark train --profile /tmp/prof  # and where the step's time goes, by op type
    simsiam-benchmark input --backbone-width 16
    simsiam-benchmark export exported/quickstart          # SavedModel vs ONNX Runtime inference

`train` prints images/s, the same rate in GFLOP/s beside a float32 matmul's on the same threads
(how close the step comes to the machine), and the peak host memory (RSS) of the run; run one
preset per command, since a process's memory high-water mark is its own. `--peer torch` (needs
`pip install -e .[torch]`) times the same SimSiam step in PyTorch, in a process of its own,
alternately with ours, on the same number of threads, and prints both rates, their ratio and each
process's peak memory. `input` prints, for each preset, the input pipeline's pairs of views/s per
stage, the train step's, host against device augmentation measured alternately, and what device
augmentation adds to the train step.
"""

from __future__ import annotations

import argparse
import os
import sys

from simsiam_keras.benchmark.export_throughput import export_throughput
from simsiam_keras.benchmark.input_throughput import input_benchmark
from simsiam_keras.benchmark.roofline import MATMUL_SIZE
from simsiam_keras.benchmark.train_throughput import train_throughput
from simsiam_keras.cli.parser import USER_ERRORS, ArgumentParser
from simsiam_keras.config import AUGMENT_ON, BENCHMARK_BATCH_SIZE
from simsiam_keras.train.distribute import STRATEGIES
from simsiam_keras.train.pretrain import MIXED_PRECISION

PROFILE_LINES = 15


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="training images/s (each image = two views) and peak host memory, on random data")
    train.add_argument("--preset", default="cifar", choices=sorted(BENCHMARK_BATCH_SIZE),
                       help="model and batch defaults: cifar (resnet18_cifar, 32 px, batch 256) or imagenet "
                            "(resnet50, 224 px, batch 32)")
    train.add_argument("--backbone", help="default: the preset's")
    train.add_argument("--backbone-width", type=int, help="default 64")
    train.add_argument("--image-size", type=int, help="default: the preset's")
    train.add_argument("--batch-size", type=int, help="global batch (default: 256 for cifar, 32 for imagenet)")
    train.add_argument("--steps", type=int, default=10)
    train.add_argument("--warmup-steps", type=int, default=3)
    train.add_argument("--strategy", default="auto", choices=STRATEGIES)
    train.add_argument("--cpu-replicas", type=int, default=0)
    train.add_argument("--mixed-precision", default="off", choices=sorted(MIXED_PRECISION))
    train.add_argument("--steps-per-execution", type=int, default=1, help="must divide --steps and --warmup-steps")
    train.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    train.add_argument("--peer", choices=("torch",), help="also time the same step in PyTorch, alternately with ours")
    train.add_argument("--rounds", type=int, help="timed rounds of --steps steps each (default 2 with --peer, else 1)")
    train.add_argument("--threads", type=int, help="intra-op threads for TensorFlow and the peer (default: TensorFlow's)")
    train.add_argument("--augment-on", default="host", choices=AUGMENT_ON,
                       help="device: the step gets uint8 crops and seeds and applies flip, jitter, grayscale and blur")
    train.add_argument("--profile", dest="profile_dir", metavar="LOGDIR",
                       help="trace --steps more steps with the TensorFlow profiler into LOGDIR and print the op "
                            "types' shares of the op time")
    source = commands.add_parser("input", help="pairs of views/s from the input pipeline, per stage, vs the train step")
    source.add_argument("--batch-size", type=int, default=256)
    source.add_argument("--batches", type=int, default=20)
    source.add_argument("--backbone-width", type=int, default=64, help="of the train-step rate it is compared with")
    source.add_argument("--jpeg-dir", default="/tmp/simsiam_benchmark_jpegs",
                        help="folder of JPEGs for case (b); 2,000 images of 500x375 are generated there if it is empty")
    source.add_argument("--jpeg-batch-size", type=int, default=64)
    source.add_argument("--train-batch-size", type=int, default=32, help="batch of the resnet50 train step in case (b)")
    served = commands.add_parser("export", help="inference images/s of an export's SavedModel and ONNX model")
    served.add_argument("export_dir", metavar="EXPORT_DIR", help="a folder simsiam-export wrote")
    served.add_argument("--batch-size", type=int, default=64)
    served.add_argument("--seconds", type=float, default=5.0, help="time each format for at least this long")
    source.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of host and device augmentation; the medians are reported")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        command = args.pop("command")
        if command == "input":
            return report_input(**args)
        if command == "export":
            return report_export(**args)
        result = train_throughput(**args)
    except USER_ERRORS as error:
        return parser.report(error)
    print(
        f"train {result['backbone']} width {result['backbone_width']} {result['image_size']}px "
        f"batch {result['batch_size']}, augment on {result['augment_on']}: {result['images_per_second']:.1f} images/s "
        f"({result['seconds_per_step'] * 1000:.0f} ms/step, {result['parameters'] / 1e6:.2f}M backbone parameters)"
    )
    if result["peer"]:
        print(f"  torch {result['peer_version']} peer: {result['peer_images_per_second']:.1f} images/s "
              f"(its own process, {result['threads']} threads each)")
        print(f"  rounds, images/s: ours {rates(result['rounds'])}; torch {rates(result['peer_rounds'])}")
        print(f"  ours/torch: {result['ratio']:.2f}x (best round of each); round by round: "
              + " ".join(f"{ratio:.2f}x" for ratio in result["round_ratios"]))
    matmul = result["matmul_gflops"]
    print(f"  {result['step_gflop']:.1f} GFLOP a step (convolutions and matmuls: forward and both gradients, two views): "
          f"{gflops_line(result['gflops'], matmul)}"
          + (f"; torch {gflops_line(result['peer_gflops'], matmul)}" if result["peer"] else "")
          + (f"; a float32 {MATMUL_SIZE}x{MATMUL_SIZE} matmul {matmul:.0f} GFLOP/s" if matmul else ""))
    if result["load_average"] is not None:
        print(f"  load average {result['load_average']:.2f} when the run started, on {os.cpu_count()} CPUs "
              f"(other processes slow both steps, the peer's threads more)")
    print(f"  {'ours: ' if result['peer'] else ''}{memory_line(result)}")
    if result["peer"]:
        print(f"  torch peer, its own process: {memory_line(result, 'peer_', before='Python, TensorFlow, torch')}")
    if result["profile"]:
        print(f"  op self time by type, {sum(op.seconds for op in result['profile']):.2f} s summed over threads "
              f"(trace in {args['profile_dir']}):")
        for op in result["profile"][:PROFILE_LINES]:
            print(f"    {op.op_type:<36}{100 * op.share:5.1f}%  {op.seconds:8.3f} s  {op.count:6d} ops")
    return 0


def gflops_line(gflops: float, matmul_gflops: float | None) -> str:
    share = f" ({100 * gflops / matmul_gflops:.0f}% of a matmul's)" if matmul_gflops else ""
    return f"{gflops:.0f} GFLOP/s{share}"


def rates(values: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in values)


def memory_line(result: dict, prefix: str = "", before: str = "Python, TensorFlow") -> str:
    """The peak host memory of the process whose figures are `result`'s `{prefix}peak_rss_mb` etc."""
    peak = result[f"{prefix}peak_rss_mb"]
    if peak is None:
        return "peak host memory: not available on this platform"
    if result[f"{prefix}peak_includes_startup"]:
        return f"peak host memory {peak:.0f} MB (RSS high-water mark of the whole process)"
    return (f"peak host memory {peak:.0f} MB during the run: {result[f'{prefix}rss_before_mb']:.0f} MB "
            f"before it ({before}) + {result[f'{prefix}rss_increase_mb']:.0f} MB while building and training "
            f"(weights, optimizer state, data, activations, the framework's runtime)")


def report_export(export_dir: str, batch_size: int, seconds: float) -> int:
    figures = export_throughput(export_dir, batch_size, min_seconds=seconds)
    print(f"export {figures['backbone']} at {figures['image_size']}px, batch {figures['batch']}, "
          f"{figures['cpu_count']} CPUs:")
    for fmt in ("saved_model", "onnx"):
        if f"{fmt}_images_per_s" in figures:
            print(f"  {fmt:<12} {figures[f'{fmt}_images_per_s']:8.1f} images/s")
    return 0


def report_input(**kwargs) -> int:
    cores = os.cpu_count() or 1
    for title, case in input_benchmark(**kwargs).items():
        print(f"input {title}, {cores} cores:")
        for stage, rate in case["stages"].items():
            print(f"  {stage:<12} {rate:9.1f} pairs/s  {rate / cores:8.1f} pairs/s per core")
        streamed = [rate for stage, rate in case["stages"].items() if stage != "cached"][-1]
        train = case["train step"]
        slower = "input pipeline" if streamed < train else "train step"
        print(f"  train step   {train:9.1f} pairs/s -> bottleneck: {slower}")
        modes = case["augment_on"]
        print(f"  --augment-on host vs device, alternating, median of {kwargs.get('rounds', 3)} rounds "
              f"(per core: pairs per CPU-second of the pipeline):")
        for mode in ("host", "device"):
            print(f"    {mode:<10} {modes[mode]['pairs_per_second']:9.1f} pairs/s  "
                  f"{modes[mode]['pairs_per_cpu_second']:8.1f} pairs/s per core")
        cost, pairs = case["device augmentation"], case["train batch"]
        step_ms = 1000 * pairs / train
        print(f"  device augmentation in the train step: {cost['ms_per_step']:.0f} ms per step of {pairs} pairs "
              f"({cost['cpu_ms_per_step']:.0f} ms of CPU time), {100 * cost['ms_per_step'] / step_ms:.2g}% "
              f"of the {step_ms:.0f} ms step (XLA, compiled once in {cost['compile_seconds']:.0f} s)")
        host, device = modes["host"]["pairs_per_cpu_second"], modes["device"]["pairs_per_cpu_second"]
        print(f"  {case['preset']}: host {host:.1f}, device {device:.1f} pairs/s per core; "
              f"device/host: {modes['device/host']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
