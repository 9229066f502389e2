"""Counts how often a synthetic pretraining run's data resolution enters each `simsiam_keras/data/` module.

    python -m tests.measure_data_entries [--calls-only] [--folder]

Traces (`sys.setprofile`) `pretrain` of a tiny synthetic run (`epochs=0`, so the kNN monitor
evaluates the random-init encoder once and nothing is trained: the data is resolved, described,
and its evaluation splits read). `--calls-only` traces only the data calls `pretrain` makes,
in its order: `load_dataset`, `find_eval_data`, `in_memory`, `describe`. `--folder` reads the
synthetic images (300 train, 100 test) written as PNG files to `folder:TMP/train|test/<class>/`
instead: a streamed source, whose evaluation splits are read from its files. An entry is a Python
call into a module from another module of the package (the nearest package frame up the stack;
TensorFlow's frames between them do not count); calls within one module are stays, not entries.
Prints, per `data/` module, its entries and the modules they came from, then the totals.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
from pathlib import Path

import keras

import numpy as np
import tensorflow as tf

from simsiam_keras.config import MONITOR_IMAGES, make_config
from simsiam_keras.data import sources, spec
from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic
from simsiam_keras.train import pretrain as pretraining

PACKAGE = str(Path(sources.__file__).resolve().parent.parent)


def _module(frame) -> str | None:
    """The package module (`data.spec`) of a frame's code, or None outside the package."""
    filename = frame.f_code.co_filename
    if not filename.startswith(PACKAGE):
        return None
    return str(Path(filename).relative_to(PACKAGE).with_suffix("")).replace(os.sep, ".")


def traced(run) -> tuple[collections.Counter, int]:
    """(caller module, data module) -> entries while `run()` runs, and the calls of `spec.parse_dataset`."""
    entries: collections.Counter = collections.Counter()
    parses = 0

    def profile(frame, event, arg):
        nonlocal parses
        if event != "call":
            return
        parses += frame.f_code is spec.parse_dataset.__code__
        module = _module(frame)
        if module is None or not module.startswith("data."):
            return
        caller = frame.f_back
        while caller is not None and _module(caller) is None:
            caller = caller.f_back
        came_from = _module(caller) if caller is not None else "(outside)"
        if came_from != module:
            entries[came_from, module] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return entries, parses


def write_folder(root: str) -> None:
    """The synthetic images as PNG files, root/<split>/<class>/<index>.png."""
    data = make_synthetic(num_train=300, num_test=100)
    for split in ("train", "test"):
        for index, (image, label) in enumerate(zip(data[f"x_{split}"], data[f"y_{split}"])):
            folder = os.path.join(root, split, CLASS_NAMES[label])
            os.makedirs(folder, exist_ok=True)
            tf.io.write_file(os.path.join(folder, f"{index}.png"), tf.io.encode_png(np.asarray(image)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    calls_only, folder = "--calls-only" in args, "--folder" in args
    with tempfile.TemporaryDirectory() as out:
        dataset = "synthetic"
        if folder:
            write_folder(os.path.join(out, "images"))
            dataset = f"folder:{os.path.join(out, 'images')}"
        config = make_config("quickstart", dataset=dataset, backbone_width=4, epochs=0, knn_every=1,
                             output_dir=os.path.join(out, "run"))
        keras.utils.set_random_seed(config.seed)
        if calls_only:
            def run():
                source = sources.load_dataset(config.dataset, config.image_size, config.seed, config.data_dir)
                # The function pretrain calls, from wherever pretrain imports it.
                found = pretraining.find_eval_data(source, config.data_dir, config.seed)
                found.in_memory(config.image_size, config.eval_resize_ratio, MONITOR_IMAGES)
                sources.describe(source)
        else:
            def run():
                pretraining.pretrain(config, verbose=0)
        entries, parses = traced(run)
    by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (came_from, module), count in entries.items():
        by_module[module][came_from] += count
    what = "the data calls pretrain makes" if calls_only else "pretrain, epochs=0"
    print(f"entries into data/ modules ({what}, {'a folder' if folder else 'synthetic'}):")
    for module in sorted(by_module):
        froms = ", ".join(f"{m} {n}" for m, n in by_module[module].most_common())
        print(f"  {module:22s} {sum(by_module[module].values()):4d}   from {froms}")
    print(f"  total {sum(entries.values())} entries into {len(by_module)} data/ modules; "
          f"the spec parsed (parse_dataset called) {parses} times")


if __name__ == "__main__":
    main()
