"""The benchmark's measurements run end to end on tiny inputs (speed itself is never asserted)."""

from simsiam_keras.benchmark import input_throughput_files, write_jpeg_folder


def test_file_benchmark_reports_every_stage(tmp_path):
    files = write_jpeg_folder(str(tmp_path), count=8, width=48, height=40)
    assert len(files) == 8 and all(f.endswith(".jpg") for f in files)
    rates = input_throughput_files(files, image_size=32, batch_size=4, batches=2, warmup=1)
    assert list(rates) == ["read+decode", "+crops", "+colour", "+blur", "cached"]
    assert all(rate > 0 for rate in rates.values())
