import json
import os

import pytest

from simsiam_keras.evaluate.results import append_result, read_results, results_path


def test_append_accumulates_records_in_order(tmp_path):
    run = str(tmp_path / "run")
    assert read_results(run) == []
    append_result(run, dataset="synthetic", split="test", metric="top1", value=0.5, protocol="linear")
    append_result(run, dataset="synthetic", split="test", metric="knn_top1", value=0.25, protocol="knn", k=200)
    records = read_results(run)
    assert [r["metric"] for r in records] == ["top1", "knn_top1"]
    assert records[1]["k"] == 200 and records[1]["value"] == 0.25
    assert all("timestamp" in r for r in records)
    with open(results_path(run)) as f:
        assert json.load(f) == records
    # No temp files left behind.
    assert os.listdir(run) == ["results.json"]


def test_rejects_a_file_that_is_not_a_list(tmp_path):
    with open(results_path(str(tmp_path)), "w") as f:
        json.dump({"top1": 1.0}, f)
    with pytest.raises(ValueError):
        read_results(str(tmp_path))
