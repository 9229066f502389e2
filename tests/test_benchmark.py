"""The benchmark's measurements run end to end on tiny inputs (speed itself is never asserted)."""

import numpy as np
import pytest

from simsiam_keras.benchmark.input_throughput import input_throughput_files, write_jpeg_folder
from simsiam_keras.benchmark.roofline import forward_multiply_adds, train_step_flops
from simsiam_keras.benchmark.train_throughput import train_throughput


def test_file_benchmark_reports_every_stage(tmp_path):
    files = write_jpeg_folder(str(tmp_path), count=8, width=48, height=40)
    assert len(files) == 8 and all(f.endswith(".jpg") for f in files)
    rates = input_throughput_files(files, image_size=32, batch_size=4, batches=2, warmup=1)
    assert list(rates) == ["read+decode", "+crops", "+colour", "+blur", "cached"]
    assert all(rate > 0 for rate in rates.values())


def test_host_memory_counts_what_the_block_allocates():
    from simsiam_keras.benchmark.host_memory import measure_host_memory

    with measure_host_memory() as memory:
        block = np.ones(25_000_000)  # 200 MB, every page written
    del block
    assert not memory.peak_includes_startup  # Linux: the high-water mark was reset at the start
    assert 150 < memory.increase_mb < 1000, memory  # in MB: not KiB, not bytes


def test_a_peak_read_under_the_start_counts_as_no_increase(monkeypatch):
    from simsiam_keras.benchmark import host_memory

    # VmRSS, then VmHWM just after the reset, then VmHWM at the end: the kernel's approximate
    # counters read 0.17 MB lower at the end of a block that allocated nothing (seen in CI).
    readings = iter([2250.0, 2251.13, 2250.96])
    monkeypatch.setattr(host_memory, "_proc_status_mb", lambda field: next(readings))
    with host_memory.measure_host_memory() as memory:
        pass
    assert memory.peak_mb == memory.before_mb == 2251.13 and memory.increase_mb == 0


def test_train_benchmark_reports_throughput_peak_memory_and_the_profile(tmp_path):
    result = train_throughput(backbone_width=4, image_size=16, batch_size=8, steps=1, warmup_steps=0,
                              profile_dir=str(tmp_path / "profile"))
    assert result["backbone"] == "resnet18_cifar" and result["batch_size"] == 8 and result["images_per_second"] > 0
    # A process with TensorFlow loaded holds hundreds of MB; a reading in KiB or bytes would be far off.
    assert 100 < result["rss_before_mb"] <= result["peak_rss_mb"] < 100_000, result
    assert result["rss_increase_mb"] == result["peak_rss_mb"] - result["rss_before_mb"] >= 0
    # The profile of the step: the convolutions and their gradients, BatchNorm on the fused kernel
    # (forward and backward; oneDNN renames them _MklNative...), the fused SGD update.
    profile = {op.op_type: op for op in result["profile"]}
    assert sum(op.share for op in profile.values()) == pytest.approx(1.0)
    assert [op.seconds for op in result["profile"]] == sorted((op.seconds for op in result["profile"]), reverse=True)
    kinds = " ".join(profile)
    for kind in ("Conv2D", "Conv2DBackpropFilter", "FusedBatchNormV3", "FusedBatchNormGradV3", "ResourceApplyMomentum"):
        assert kind in kinds, kinds
    # The rate in FLOP/s is the step's work at the best round's rate, beside a matmul's.
    assert result["step_gflop"] > 0 and result["matmul_gflops"] > 0 and result["peer_gflops"] is None
    assert result["gflops"] == pytest.approx(result["step_gflop"] * result["images_per_second"] / 8)


def test_multiply_adds_are_counted_per_layer_and_match_the_published_resnet_counts():
    import keras

    from simsiam_keras.nets.backbone import build_backbone

    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(images)  # 8*8*4 outputs x 3*3*3
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4*4*6 outputs x 4
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 4*4*6 outputs x 3*3
    x = keras.layers.GlobalAveragePooling2D()(x)
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])  # 6*5, nested
    model = keras.Model(images, inner(x))
    macs = 8 * 8 * 4 * 27 + 4 * 4 * 6 * 4 + 4 * 4 * 6 * 9 + 6 * 5
    assert forward_multiply_adds(model) == macs
    assert train_step_flops(model, batch_size=3) == 2 * 3 * macs * 3 * 2
    # ResNet-50 at 224 px: 4.09 G multiply-adds (torchvision's count); ResNet-18 for CIFAR: 0.56 G.
    assert forward_multiply_adds(build_backbone("resnet50", 224, 64, False)) / 1e9 == pytest.approx(4.09, rel=0.01)
    assert forward_multiply_adds(build_backbone("resnet18_cifar", 32, 64, False)) / 1e9 == pytest.approx(0.556, rel=0.01)


def test_host_and_device_augmentation_are_measured_alternately_on_tiny_inputs(tmp_path):
    from simsiam_keras.benchmark.input_throughput import augment_on_throughput, device_augment_cost

    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    result = augment_on_throughput(images, "cifar", 8, batch_size=4, batches=1, warmup=1, rounds=1)
    for mode in ("host", "device"):
        assert result[mode]["pairs_per_second"] > 0 and result[mode]["pairs_per_cpu_second"] > 0
    assert result["device/host"] == result["device"]["pairs_per_cpu_second"] / result["host"]["pairs_per_cpu_second"]
    cost = device_augment_cost("cifar", 8, batch_size=2, repeats=1)
    assert cost["ms_per_step"] > 0 and cost["compile_seconds"] > 0


def test_input_report_ends_each_preset_with_the_device_host_ratio(monkeypatch, capsys):
    from simsiam_keras.cli import benchmark

    modes = {"host": {"pairs_per_second": 10.0, "pairs_per_cpu_second": 6.0},
             "device": {"pairs_per_second": 40.0, "pairs_per_cpu_second": 25.2}, "device/host": 4.2}
    case = {"stages": {"read": 100.0, "+crops": 50.0}, "train step": 20.0, "train batch": 32, "augment_on": modes,
            "device augmentation": {"ms_per_step": 80.0, "cpu_ms_per_step": 150.0, "compile_seconds": 9.0}}
    cases = {"(a) arrays": {**case, "preset": "cifar"}, "(b) jpegs": {**case, "preset": "imagenet"}}
    monkeypatch.setattr(benchmark, "input_benchmark", lambda **kwargs: cases)
    assert benchmark.main(["input"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ratios = [line for line in lines if line.rstrip().endswith("device/host: 4.2x")]
    assert [line.split(":")[0].strip() for line in ratios] == ["cifar", "imagenet"]
    assert any("5% of the 1600 ms step" in line for line in lines)


def test_a_bfloat16_step_is_not_compared_with_a_float32_matmul(capsys):
    from simsiam_keras.cli.benchmark import main

    tiny = ["train", "--backbone-width", "4", "--image-size", "16", "--batch-size", "8", "--steps", "1", "--warmup-steps", "0"]
    assert main([*tiny, "--mixed-precision", "bfloat16"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "GFLOP a step" in line)
    assert "GFLOP/s" in line and "matmul's" not in line and "float32" not in line, line
