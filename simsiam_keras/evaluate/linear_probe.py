"""Linear classification on frozen features: the paper's headline evaluation (Sec. 4, Appendix A).

A Dense head on the backbone's pooled features is trained with labels while the backbone stays
frozen and in inference mode (BN uses its moving statistics, which must not move), as in the
authors' `main_lincls.py`; afterwards the backbone's weights are checked bitwise unchanged.
Training views are RandomResizedCrop + flip drawn per image; evaluation is one centre crop.
With `cache_features`, features are extracted once from centre crops (no augmentation) and the
head trains on those arrays: much faster on a CPU, slightly different from the protocol.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import random_flip, random_resized_crop
from simsiam_keras.config import LinearEvalConfig
from simsiam_keras.data.sources import DataSource
from simsiam_keras.evaluate.lars import LARS
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.method.optimizers import TorchSGD

CLASSIFIER_FILE = "classifier.keras"
CLASSIFIER_INFO = "classifier.json"
RESULT_FILE = "linear_eval.json"
PROTOCOL = "linear_probe"


@dataclasses.dataclass
class LinearEvalResult:
    top1: float
    top5: float
    classifier: keras.Model
    output_dir: str
    seconds: float
    backbone_unchanged: bool
    record: dict[str, Any]


# ------------------------------------------------------------------------------ views


def eval_view(image: tf.Tensor, crop_size: int, resize_ratio: float = 256 / 224) -> tf.Tensor:
    """torchvision Resize(crop x 256/224) of the shorter side, then CenterCrop(crop): float32 [0, 255]."""
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)[:2]
    short = int(crop_size * resize_ratio)
    height, width = shape[0], shape[1]
    scale = short / tf.cast(tf.minimum(height, width), tf.float64)
    # The shorter side becomes `short` exactly, the longer one int(long * short / shorter).
    new_h = tf.where(height <= width, short, tf.cast(tf.cast(height, tf.float64) * scale, tf.int32))
    new_w = tf.where(height <= width, tf.cast(tf.cast(width, tf.float64) * scale, tf.int32), short)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top = tf.cast(tf.round(tf.cast(new_h - crop_size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - crop_size, tf.float32) / 2), tf.int32)
    return tf.ensure_shape(image[top : top + crop_size, left : left + crop_size], (crop_size, crop_size, 3))


def train_view(image: tf.Tensor, crop_size: int, config: LinearEvalConfig, seed: tf.Tensor) -> tf.Tensor:
    """RandomResizedCrop(crop, scale (0.08, 1)) + horizontal flip, from a per-image stateless seed."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    view = random_resized_crop(image, crop_size, config.crop_scale, config.crop_ratio, seeds[0])
    return tf.ensure_shape(random_flip(view, config.flip_prob, seeds[1]), (crop_size, crop_size, 3))


def train_dataset(
    images: np.ndarray, labels: np.ndarray, crop_size: int, config: LinearEvalConfig
) -> tf.data.Dataset:
    """Endless shuffled batches of (augmented view, label); every image draws its own crop and flip."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=config.seed).batch(2)))
    ds = ds.map(lambda xy, seed: (train_view(xy[0], crop_size, config, seed), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, crop_size: int, resize_ratio: float, batch_size: int = 256) -> tf.data.Dataset:
    """Centre-crop batches in the order of `images`."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.map(lambda x: eval_view(x, crop_size, resize_ratio), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- model


def build_classifier(backbone: keras.Model, num_classes: int, init_std: float = 0.01, seed: int = 0) -> keras.Model:
    """Frozen backbone (inference mode) + Dense(num_classes) head: input `images` [0, 255] -> logits.

    The head is initialised N(0, init_std) with zero bias, as the authors do. `backbone.trainable`
    is set to False, which in Keras 3 also runs its BatchNormalization layers in inference mode.
    """
    backbone.trainable = False
    size = backbone.input_shape[1]
    images = keras.Input((size, size, 3), name="images")
    features = backbone(images, training=False)
    head = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(0.0, init_std, seed=seed),
        bias_initializer="zeros",
        name="head",
    )
    return keras.Model(images, head(features), name="linear_classifier")


def head_of(classifier: keras.Model) -> keras.layers.Dense:
    return classifier.get_layer("head")


def make_optimizer(config: LinearEvalConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """LARS or PyTorch-style SGD at lr = base_lr x batch/256, cosine decay to 0 over every step.

    (The authors step the cosine once per epoch; per step differs only within an epoch.)
    """
    schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(1, total_steps))
    if config.optimizer == "lars":
        return LARS(schedule, momentum=config.momentum, l2=config.weight_decay,
                    trust_coefficient=config.trust_coefficient)
    return TorchSGD(schedule, momentum=config.momentum, l2=config.weight_decay)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits (k is capped at the class count)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def backbone_unchanged(before: Sequence[np.ndarray], backbone: keras.Model) -> bool:
    """Whether every weight of the backbone (BN moving statistics included) is bitwise as before."""
    after = _snapshot(backbone)
    return len(after) == len(before) and all(np.array_equal(a, b) for a, b in zip(before, after))


# -------------------------------------------------------------------------- training


def check_labelled(source: DataSource) -> None:
    """Raises ValueError (fit for a command line) unless the source has labelled train and test arrays."""
    if not source.has_labels or source.x_train is None:
        raise ValueError(
            f"--dataset {source.name}: the linear probe needs labelled train and test images "
            "(y_train, x_test and y_test)"
        )


def linear_eval(
    backbone: keras.Model,
    source: DataSource,
    config: LinearEvalConfig,
    verbose: int | str = 0,
) -> tuple[keras.Model, dict[str, Any]]:
    """Trains a linear head on the frozen `backbone` with `source`'s labels and scores the test split.

    Returns the classifier (backbone + head) and a result dict with top1, top5, the step count
    and `backbone_unchanged` (asserted: the probe raises if any backbone weight moved).
    """
    check_labelled(source)
    keras.utils.set_random_seed(config.seed)
    crop = backbone.input_shape[1]
    num_classes = source.num_classes
    before = _snapshot(backbone)
    classifier = build_classifier(backbone, num_classes, config.head_init_std, config.seed)
    head = head_of(classifier)
    steps_per_epoch = math.ceil(len(source.x_train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = make_optimizer(config, total)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.time()
    if config.cache_features:
        extract = lambda x: backbone.predict(eval_dataset(x, crop, config.eval_resize_ratio), verbose=0)  # noqa: E731
        train_features, test_features = extract(source.x_train), extract(source.x_test)
        features = keras.Input((train_features.shape[1],), name="features")
        trainer = keras.Model(features, head(features), name="linear_head")
        trainer.compile(optimizer=optimizer, loss=loss)
        trainer.fit(train_features, source.y_train, batch_size=config.batch_size, epochs=config.epochs,
                    shuffle=True, verbose=verbose)
        logits = trainer.predict(test_features, batch_size=1024, verbose=0)
    else:
        classifier.compile(optimizer=optimizer, loss=loss)
        data = train_dataset(source.x_train, source.y_train, crop, config)
        classifier.fit(data, epochs=config.epochs, steps_per_epoch=steps_per_epoch, shuffle=False, verbose=verbose)
        logits = classifier.predict(eval_dataset(source.x_test, crop, config.eval_resize_ratio), verbose=0)
    unchanged = backbone_unchanged(before, backbone)
    if not unchanged:  # the authors' sanity check: the probe must not change the pretrained model
        raise RuntimeError("the backbone's weights changed during linear classification")
    result = {
        "top1": top_k_accuracy(logits, source.y_test, 1),
        "top5": top_k_accuracy(logits, source.y_test, 5),
        "steps": total,
        "lr": config.lr,
        "seconds": time.time() - start,
        "backbone_unchanged": unchanged,
        "backbone_weights_checked": len(before),
        "train_images": int(len(source.x_train)),
        "test_images": int(len(source.x_test)),
        "num_classes": num_classes,
    }
    # A fresh, uncompiled model over the same layers: saved without optimizer state.
    return keras.Model(classifier.inputs, classifier.outputs, name="linear_classifier"), result


def class_names(spec: str, num_classes: int, data_dir: str | None = None) -> list[str]:
    """Names of the classes of a `--dataset` spec; "0", "1", ... when the source has none."""
    names: list[str] = []
    if spec == "synthetic":
        from simsiam_keras.data.synthetic import CLASS_NAMES

        names = list(CLASS_NAMES)
    elif spec.startswith("folder:"):
        from simsiam_keras.data.sources import list_image_folder

        names = list(list_image_folder(spec[len("folder:"):])["train"].class_names)
    elif not spec.startswith("npz:"):
        try:
            import tensorflow_datasets as tfds

            label = tfds.builder(spec, data_dir=data_dir).info.features["label"]
            names = list(label.names)
        except Exception:  # any TFDS dataset without named labels
            names = []
    if len(names) != num_classes:
        names = [str(i) for i in range(num_classes)]
    return names


def save_classifier(
    classifier: keras.Model, output_dir: str, names: list[str], checkpoint: str, backbone_name: str,
    recipe: dict[str, Any],
) -> None:
    """`classifier.keras` (input `images` float32 [0, 255] NHWC -> logits) and `classifier.json`, for export."""
    os.makedirs(output_dir, exist_ok=True)
    classifier.save(os.path.join(output_dir, CLASSIFIER_FILE))
    info = {
        "class_names": names,
        "image_size": int(classifier.input_shape[1]),
        "backbone": backbone_name,
        "feature_dim": int(head_of(classifier).kernel.shape[0]),
        "checkpoint": checkpoint,
        "recipe": recipe,
    }
    with open(os.path.join(output_dir, CLASSIFIER_INFO), "w") as f:
        json.dump(info, f, indent=2)


def backbone_name(backbone: keras.Model, checkpoint: str) -> str:
    """The architecture name: from the run's config.json or the export's metadata.json, else the model's name."""
    from simsiam_keras.export.load import resolve_checkpoint

    path = Path(checkpoint)
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        if config.is_file():
            return str(json.loads(config.read_text())["backbone"])
        return str(resolve_checkpoint(checkpoint).metadata["backbone"])
    except (KeyError, ValueError, FileNotFoundError):
        return backbone.name


def run_linear_eval(
    checkpoint: str,
    source: DataSource,
    config: LinearEvalConfig,
    recipe: str,
    output_dir: str | None = None,
    dataset_spec: str | None = None,
    data_dir: str | None = None,
    verbose: int | str = 0,
    backbone: keras.Model | None = None,
) -> LinearEvalResult:
    """The whole probe behind scripts/linear_eval.py: load, train, score, save, record.

    Writes OUTPUT/classifier.keras, classifier.json and linear_eval.json (OUTPUT defaults to
    RUN/linear next to the checkpoint) and appends top-1/top-5 to the run's results.json.
    `backbone` is the checkpoint's, when the caller has loaded it already.
    """
    from simsiam_keras.export.load import load_backbone, run_dir_of

    check_labelled(source)
    backbone = backbone if backbone is not None else load_backbone(checkpoint)
    run_dir = str(run_dir_of(checkpoint))
    output_dir = output_dir or os.path.join(run_dir, "linear")
    start = time.time()
    classifier, result = linear_eval(backbone, source, config, verbose)
    recipe_record = {"name": recipe, **config.to_dict()}
    save_classifier(
        classifier, output_dir, class_names(dataset_spec or source.name, source.num_classes, data_dir),
        str(checkpoint), backbone_name(backbone, checkpoint), recipe_record,
    )
    record = {
        "checkpoint": str(checkpoint),
        "dataset": source.name,
        "split": "test",
        "protocol": PROTOCOL,
        "recipe": recipe_record,
        "image_size": int(classifier.input_shape[1]),
        "feature_dim": int(backbone.output_shape[-1]),
        **result,
    }
    with open(os.path.join(output_dir, RESULT_FILE), "w") as f:
        json.dump(record, f, indent=2)
    extra = {"recipe": recipe, "cache_features": config.cache_features, "epochs": config.epochs,
             "checkpoint": str(checkpoint)}
    for metric in ("top1", "top5"):
        append_result(run_dir, dataset=source.name, split="test", metric=metric, value=result[metric],
                      protocol=PROTOCOL, **extra)
    return LinearEvalResult(result["top1"], result["top5"], classifier, output_dir, time.time() - start,
                            result["backbone_unchanged"], record)
