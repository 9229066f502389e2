"""kNN evaluation of a saved run end to end (load, score, write the result): the library function behind
simsiam-knn-eval; `knn.knn_top1_of_model` scores a model already in hand."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from simsiam_keras.config import EVAL_RESIZE_RATIO
from simsiam_keras.data.sources import eval_data
from simsiam_keras.data.spec import parse_dataset
from simsiam_keras.evaluate.knn import KNN_K, KNN_TEMPERATURE, knn_top1_of_model
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.saved_run import load_feature_extractor, locate_model, run_dir_of, run_settings

METRIC = "knn_top1"


def knn_eval(
    checkpoint: str,
    dataset: str = "synthetic",
    data_dir: str | None = None,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    batch_size: int = 256,
    kind: str | None = None,
    output: str | None = None,
    seed: int = 0,
    resize_ratio: float | None = None,
) -> dict[str, Any]:
    """Weighted kNN top-1 of the backbone at `checkpoint` (bank: train split, queries: test split).

    Images are seen through the evaluation view with `resize_ratio` (None: the ratio of the
    checkpoint's run, else the paper's 256/224). Everything is checked before the model is
    loaded. The result is written as JSON to `output` (default `RUN/knn_<dataset>.json`) and
    appended to the run's results.json.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    resolved = locate_model(checkpoint, kind)
    spec = parse_dataset(dataset)
    data = eval_data(spec, data_dir, seed)
    if resize_ratio is None:
        resize_ratio = run_settings(checkpoint).get("eval_resize_ratio", EVAL_RESIZE_RATIO)
    run_dir = run_dir_of(checkpoint)
    output_path = Path(output) if output else run_dir / f"knn_{spec.slug}.json"
    if not output_path.parent.is_dir():
        raise FileNotFoundError(f"output {output_path}: no such directory {output_path.parent}")

    start = time.time()
    extractor = load_feature_extractor(resolved.path, resolved.kind)
    counts = knn_top1_of_model(
        extractor,
        data.bank.batches(extractor.image_size, resize_ratio, batch_size),
        data.query.batches(extractor.image_size, resize_ratio, batch_size),
        k,
        temperature,
    )
    protocol = f"weighted kNN, k={k}, T={temperature}, cosine on l2-normalised features, bank={data.bank.name}"
    details = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "model_kind": extractor.kind,
        "image_size": extractor.image_size,
        "feature_dim": extractor.feature_dim,
        "k": k,
        "temperature": temperature,
        "eval_resize_ratio": resize_ratio,
        "bank_split": data.bank.name,
        "bank_images": counts["bank_images"],
        "query_images": counts["query_images"],
        "skipped_images": data.bank.size + data.query.size - counts["bank_images"] - counts["query_images"],
        "seconds": round(time.time() - start, 2),
    }
    record = {"dataset": data.name, "split": data.query.name, "metric": METRIC, "value": counts["top1"],
              "protocol": protocol}
    output_path.write_text(json.dumps({**record, **details}, indent=2) + "\n")
    append_result(str(run_dir), **record, **details)
    return {**record, **details, "output": str(output_path), "run_dir": str(run_dir)}
