"""The benchmark's measurements run end to end on tiny inputs (speed itself is never asserted)."""

import numpy as np

from simsiam_keras.benchmark.throughput import input_throughput_files, train_throughput, write_jpeg_folder


def test_file_benchmark_reports_every_stage(tmp_path):
    files = write_jpeg_folder(str(tmp_path), count=8, width=48, height=40)
    assert len(files) == 8 and all(f.endswith(".jpg") for f in files)
    rates = input_throughput_files(files, image_size=32, batch_size=4, batches=2, warmup=1)
    assert list(rates) == ["read+decode", "+crops", "+colour", "+blur", "cached"]
    assert all(rate > 0 for rate in rates.values())


def test_host_memory_counts_what_the_block_allocates():
    from simsiam_keras.benchmark.throughput import measure_host_memory

    with measure_host_memory() as memory:
        block = np.ones(25_000_000)  # 200 MB, every page written
    del block
    assert not memory.peak_includes_startup  # Linux: the high-water mark was reset at the start
    assert 150 < memory.increase_mb < 1000, memory  # in MB: not KiB, not bytes


def test_train_benchmark_reports_throughput_and_peak_memory():
    result = train_throughput(backbone_width=4, image_size=16, batch_size=8, steps=1, warmup_steps=0)
    assert result["backbone"] == "resnet18_cifar" and result["batch_size"] == 8 and result["images_per_second"] > 0
    # A process with TensorFlow loaded holds hundreds of MB; a reading in KiB or bytes would be far off.
    assert 100 < result["rss_before_mb"] <= result["peak_rss_mb"] < 100_000, result
    assert result["rss_increase_mb"] == result["peak_rss_mb"] - result["rss_before_mb"] >= 0
