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
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import random_flip, random_resized_crop, resize_crop
from simsiam_keras.config import EVAL_RESIZE_RATIO, LinearEvalConfig
from simsiam_keras.data.decode import decode_and_random_crop
from simsiam_keras.data.eval_splits import EvalData, LabelledSplit
from simsiam_keras.evaluate.knn import extract_labelled_features
from simsiam_keras.evaluate.lars import LARS
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.export.load import load_backbone, run_dir_of, run_settings
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


def train_view(image: tf.Tensor, crop_size: int, config: LinearEvalConfig, seed: tf.Tensor) -> tf.Tensor:
    """RandomResizedCrop(crop, scale (0.08, 1)) + horizontal flip, from a per-image stateless seed."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    view = random_resized_crop(image, crop_size, config.crop_scale, config.crop_ratio, seeds[0])
    return tf.ensure_shape(random_flip(view, config.flip_prob, seeds[1]), (crop_size, crop_size, 3))


def train_dataset(split: LabelledSplit, crop_size: int, config: LinearEvalConfig) -> tf.data.Dataset:
    """Endless shuffled batches of (augmented view, label); every image draws its own crop and flip.

    In-memory images are cropped from the arrays; a streamed split's files are cropped while
    decoding (undecodable ones dropped), as pretraining reads them.
    """
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
    if split.streamed:
        ds = split.encoded(None).shuffle(split.size, seed=config.seed, reshuffle_each_iteration=True).repeat()

        def view(element, seed):
            data, label = element
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
            crop, ok = decode_and_random_crop(data, config.crop_scale, config.crop_ratio, crop_seed)
            flipped = random_flip(resize_crop(crop, crop_size), config.flip_prob, flip_seed)
            return tf.ensure_shape(flipped, (crop_size, crop_size, 3)), tf.cast(label, tf.int64), ok

        ds = tf.data.Dataset.zip((ds, seeds)).map(view, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda x, y, ok: ok).map(lambda x, y, ok: (x, y))
    else:
        images, labels = split.arrays(crop_size)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        ds = ds.shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True).repeat()
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(lambda xy, seed: (train_view(xy[0], crop_size, config, seed), xy[1]),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


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


def linear_eval(
    backbone: keras.Model,
    data: EvalData,
    config: LinearEvalConfig,
    verbose: int | str = 0,
) -> tuple[keras.Model, dict[str, Any]]:
    """Trains a linear head on the frozen `backbone` with `data`'s bank split, then scores its query split.

    Images are seen through the evaluation view with `config.eval_resize_ratio` (the paper's
    256/224 when None). Returns the classifier (backbone + head) and a result dict with top1,
    top5, the step count and `backbone_unchanged` (asserted: the probe raises if any backbone
    weight moved).
    """
    keras.utils.set_random_seed(config.seed)
    crop = backbone.input_shape[1]
    ratio = config.eval_resize_ratio or EVAL_RESIZE_RATIO
    before = _snapshot(backbone)
    classifier = build_classifier(backbone, data.num_classes, config.head_init_std, config.seed)
    head = head_of(classifier)
    steps_per_epoch = math.ceil(data.bank.size / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = make_optimizer(config, total)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.time()
    test_features, test_labels = extract_labelled_features(backbone, data.query.batches(crop, ratio))
    if config.cache_features:
        train_features, train_labels = extract_labelled_features(backbone, data.bank.batches(crop, ratio))
        features = keras.Input((train_features.shape[1],), name="features")
        trainer = keras.Model(features, head(features), name="linear_head")
        trainer.compile(optimizer=optimizer, loss=loss)
        trainer.fit(train_features, train_labels, batch_size=config.batch_size, epochs=config.epochs,
                    shuffle=True, verbose=verbose)
    else:
        classifier.compile(optimizer=optimizer, loss=loss)
        classifier.fit(train_dataset(data.bank, crop, config), epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                       shuffle=False, verbose=verbose)
    logits = head(test_features).numpy()
    unchanged = backbone_unchanged(before, backbone)
    if not unchanged:  # the authors' sanity check: the probe must not change the pretrained model
        raise RuntimeError("the backbone's weights changed during linear classification")
    result = {
        "top1": top_k_accuracy(logits, test_labels, 1),
        "top5": top_k_accuracy(logits, test_labels, 5),
        "steps": total,
        "lr": config.lr,
        "eval_resize_ratio": ratio,
        "seconds": time.time() - start,
        "backbone_unchanged": unchanged,
        "backbone_weights_checked": len(before),
        "train_images": data.bank.size,
        "test_images": int(len(test_labels)),
        "num_classes": data.num_classes,
    }
    # A fresh, uncompiled model over the same layers: saved without optimizer state.
    return keras.Model(classifier.inputs, classifier.outputs, name="linear_classifier"), result


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


def run_linear_eval(
    checkpoint: str,
    data: EvalData,
    config: LinearEvalConfig,
    recipe: str,
    output_dir: str | None = None,
    verbose: int | str = 0,
    backbone: keras.Model | None = None,
) -> LinearEvalResult:
    """The whole probe behind `simsiam-linear-eval`: load, train, score, save, record.

    Writes OUTPUT/classifier.keras, classifier.json and linear_eval.json (OUTPUT defaults to
    RUN/linear next to the checkpoint) and appends top-1/top-5 to the run's results.json.
    `backbone` is the checkpoint's, when the caller has loaded it already. Without a ratio in
    `config`, the evaluation view is the one the checkpoint's run used.
    """
    backbone = backbone if backbone is not None else load_backbone(checkpoint)
    settings = run_settings(checkpoint)
    if config.eval_resize_ratio is None:
        config = dataclasses.replace(config, eval_resize_ratio=settings.get("eval_resize_ratio", EVAL_RESIZE_RATIO))
    run_dir = str(run_dir_of(checkpoint))
    output_dir = output_dir or os.path.join(run_dir, "linear")
    start = time.time()
    classifier, result = linear_eval(backbone, data, config, verbose)
    recipe_record = {"name": recipe, **config.to_dict()}
    save_classifier(classifier, output_dir, data.class_names, str(checkpoint),
                    str(settings.get("backbone", backbone.name)), recipe_record)
    record = {
        "checkpoint": str(checkpoint),
        "dataset": data.name,
        "split": data.query.name,
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
        append_result(run_dir, dataset=data.name, split=data.query.name, metric=metric, value=result[metric],
                      protocol=PROTOCOL, **extra)
    return LinearEvalResult(result["top1"], result["top5"], classifier, output_dir, time.time() - start,
                            result["backbone_unchanged"], record)
