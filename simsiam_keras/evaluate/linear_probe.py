"""Linear classification on frozen features: the paper's headline evaluation (Sec. 4, Appendix A).

A Dense head on the backbone's pooled features is trained with labels while the backbone stays
frozen and in inference mode (BN uses its moving statistics, which must not move), as in the
authors' `main_lincls.py`; afterwards the backbone's weights are checked bitwise unchanged.
Training views are RandomResizedCrop + flip drawn per image; evaluation is one centre crop.
With `cache_features`, features are extracted once from centre crops (no augmentation) and the
head trains on those arrays: much faster on a CPU, slightly different from the protocol. The
`lbfgs` recipe fits the head on cached, l2-normalised features to convergence (`logistic.py`).

Which recipe a probe runs by default depends on the data (`config.default_linear_probe_recipe`),
a batch never exceeds the training split, and every probe reports the kNN top-1 of the same
features beside its own, with a warning when it falls more than `KNN_FLOOR_MARGIN` below it.
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
from simsiam_keras.config import EVAL_RESIZE_RATIO, MONITOR_IMAGES, LinearProbeConfig
from simsiam_keras.data.decode import decode_and_random_crop
from simsiam_keras.data.eval_splits import EvalData, LabelledSplit
from simsiam_keras.evaluate.knn import KNN_K, KNN_TEMPERATURE, extract_labelled_features, knn_accuracy
from simsiam_keras.evaluate.lars import LARS
from simsiam_keras.evaluate.logistic import fit_probe
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.method.optimizers import TorchSGD
from simsiam_keras.nets.l2_normalize import L2Normalize
from simsiam_keras.saved_run import load_backbone, run_dir_of, run_settings

CLASSIFIER_FILE = "classifier.keras"
CLASSIFIER_INFO = "classifier.json"
RESULT_FILE = "linear_eval.json"
PROTOCOL = "linear_probe"
HEAD, NORMALIZE = "head", "l2_normalize"
# A probe this far below the kNN top-1 of its own features is under-trained: it warns.
KNN_FLOOR_MARGIN = 0.05


@dataclasses.dataclass
class LinearProbeResult:
    top1: float
    top5: float
    knn_top1: float
    classifier: keras.Model
    output_dir: str
    seconds: float
    backbone_unchanged: bool
    record: dict[str, Any]


# ------------------------------------------------------------------------------ views


def train_view(image: tf.Tensor, crop_size: int, config: LinearProbeConfig, seed: tf.Tensor) -> tf.Tensor:
    """RandomResizedCrop(crop, scale (0.08, 1)) + horizontal flip, from a per-image stateless seed."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    view = random_resized_crop(image, crop_size, config.crop_scale, config.crop_ratio, seeds[0])
    return tf.ensure_shape(random_flip(view, config.flip_prob, seeds[1]), (crop_size, crop_size, 3))


def train_dataset(split: LabelledSplit, crop_size: int, config: LinearProbeConfig) -> tf.data.Dataset:
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


def build_classifier(
    backbone: keras.Model, num_classes: int, init_std: float = 0.01, seed: int = 0, normalize: bool = False
) -> keras.Model:
    """Frozen backbone (inference mode) [+ l2 normalisation] + Dense(num_classes) head: `images` [0, 255] -> logits.

    The head is initialised N(0, init_std) with zero bias, as the authors do. `backbone.trainable`
    is set to False, which in Keras 3 also runs its BatchNormalization layers in inference mode.
    """
    backbone.trainable = False
    size = backbone.input_shape[1]
    images = keras.Input((size, size, 3), name="images")
    features = backbone(images, training=False)
    if normalize:
        features = L2Normalize(name=NORMALIZE)(features)
    head = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(0.0, init_std, seed=seed),
        bias_initializer="zeros",
        name=HEAD,
    )
    return keras.Model(images, head(features), name="linear_classifier")


def head_of(classifier: keras.Model) -> keras.layers.Dense:
    return classifier.get_layer(HEAD)


def features_to_logits(classifier: keras.Model) -> keras.Model:
    """The classifier after its backbone (normalisation and head, the same layers): features -> logits."""
    head = head_of(classifier)
    features = keras.Input((head.kernel.shape[0],), name="features")
    names = [layer.name for layer in classifier.layers]
    normalized = classifier.get_layer(NORMALIZE)(features) if NORMALIZE in names else features
    return keras.Model(features, head(normalized), name="linear_head")


def cap_batch(config: LinearProbeConfig, train_images: int) -> tuple[LinearProbeConfig, dict[str, Any] | None]:
    """The config with its batch capped to the training split, lr scaled by the linear rule; and the cap, if any.

    A batch of 4096 on 1,500 images would be one step an epoch at an lr set for 4096 images.
    """
    if config.full_batch or config.batch_size <= train_images:
        return config, None
    capped = dataclasses.replace(config, batch_size=max(1, train_images))
    print(f"note: batch_size {config.batch_size} is larger than the {train_images:,} training images: capped to "
          f"{capped.batch_size}, lr {config.lr:g} -> {capped.lr:g} (base lr {config.base_lr:g} x batch / 256)")
    return capped, {"batch_size": config.batch_size, "capped_to": capped.batch_size, "lr": config.lr,
                    "capped_lr": capped.lr}


def make_optimizer(config: LinearProbeConfig, total_steps: int) -> keras.optimizers.Optimizer:
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


def linear_probe(
    backbone: keras.Model,
    data: EvalData,
    config: LinearProbeConfig,
    verbose: int | str = 0,
) -> tuple[keras.Model, dict[str, Any]]:
    """The linear probe of a backbone in hand: trains a linear head on the frozen `backbone` with `data`'s bank
    split, then scores its query split (`linear_probe_of_run` runs it on a saved run and writes the results).

    Images are seen through the evaluation view with `config.eval_resize_ratio` (the paper's
    256/224 when None). A batch larger than the bank is capped to it (`cap_batch`). Returns the
    classifier (backbone + head) and a result dict with top1, top5, the kNN top-1 of the same
    features (`knn_top1`; cached features, else the bank's evaluation views, streamed banks up to
    MONITOR_IMAGES), the steps or the L-BFGS fit, and `backbone_unchanged` (asserted: the probe
    raises if any backbone weight moved).
    """
    keras.utils.set_random_seed(config.seed)
    crop = backbone.input_shape[1]
    ratio = config.eval_resize_ratio or EVAL_RESIZE_RATIO
    config, batch_cap = cap_batch(config, data.bank.size)
    before = _snapshot(backbone)
    classifier = build_classifier(backbone, data.num_classes, config.head_init_std, config.seed,
                                  config.normalize_features)
    head, on_features = head_of(classifier), features_to_logits(classifier)
    start = time.time()
    test_features, test_labels = extract_labelled_features(backbone, data.query.batches(crop, ratio))
    bank = data.bank if config.cache_features else data.bank.in_memory(crop, ratio, MONITOR_IMAGES)
    train_features, train_labels = extract_labelled_features(backbone, bank.batches(crop, ratio))
    steps, fit_record = None, None
    if config.full_batch:
        normalized = on_features.get_layer(NORMALIZE)(train_features) if config.normalize_features else train_features
        fit, holdout = fit_probe(np.asarray(normalized), train_labels, data.num_classes, config.l2_grid,
                                 config.holdout_fraction, config.max_iterations, config.seed)
        head.set_weights([fit.kernel.astype(np.float32), fit.bias.astype(np.float32)])
        fit_record = {"l2": fit.l2, "holdout_top1": holdout, "iterations": fit.iterations,
                      "converged": fit.converged, "loss": fit.loss}
    else:
        steps = math.ceil(data.bank.size / config.batch_size) * config.epochs
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if config.cache_features:
            on_features.compile(optimizer=make_optimizer(config, steps), loss=loss)
            on_features.fit(train_features, train_labels, batch_size=config.batch_size, epochs=config.epochs,
                            shuffle=True, verbose=verbose)
        else:
            classifier.compile(optimizer=make_optimizer(config, steps), loss=loss)
            classifier.fit(train_dataset(data.bank, crop, config), epochs=config.epochs,
                           steps_per_epoch=steps // config.epochs, shuffle=False, verbose=verbose)
    logits = on_features.predict(test_features, batch_size=4096, verbose=0)
    unchanged = backbone_unchanged(before, backbone)
    if not unchanged:  # the authors' sanity check: the probe must not change the pretrained model
        raise RuntimeError("the backbone's weights changed during linear classification")
    top1 = top_k_accuracy(logits, test_labels, 1)
    knn_top1 = knn_accuracy(train_features, train_labels, test_features, test_labels, KNN_K, KNN_TEMPERATURE)
    below_knn = top1 < knn_top1 - KNN_FLOOR_MARGIN
    if below_knn:
        print(f"warning: the linear probe's top-1 {top1:.4f} is {100 * (knn_top1 - top1):.1f} points below the "
              f"kNN top-1 {knn_top1:.4f} of the same features: the head is under-trained")
    result = {
        "top1": top1,
        "top5": top_k_accuracy(logits, test_labels, 5),
        "knn_top1": knn_top1,
        "knn_k": KNN_K,
        "knn_temperature": KNN_TEMPERATURE,
        "knn_bank_images": int(len(train_labels)),
        "below_knn": below_knn,
        "steps": steps,
        "batch_size": None if config.full_batch else config.batch_size,
        "lr": None if config.full_batch else config.lr,
        "batch_cap": batch_cap,
        "lbfgs": fit_record,
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


def linear_probe_of_run(
    checkpoint: str,
    data: EvalData,
    config: LinearProbeConfig,
    recipe: str,
    output_dir: str | None = None,
    verbose: int | str = 0,
    backbone: keras.Model | None = None,
    reason: str = "chosen by the caller",
) -> LinearProbeResult:
    """The linear probe of a saved run, end to end, behind `simsiam-linear-eval`: load, train, score, save, record.

    Writes OUTPUT/classifier.keras, classifier.json and linear_eval.json (OUTPUT defaults to
    RUN/linear next to the checkpoint) and appends top-1/top-5 (each with the kNN top-1 of the
    same features) to the run's results.json. `recipe` is the recipe's name and `reason` why it
    was chosen (`config.default_linear_probe_recipe` gives both from the data). `backbone` is the
    checkpoint's, when the caller has loaded it already. Without a ratio in `config`, the
    evaluation view is the one the checkpoint's run used.
    """
    backbone = backbone if backbone is not None else load_backbone(checkpoint)
    settings = run_settings(checkpoint)
    if config.eval_resize_ratio is None:
        config = dataclasses.replace(config, eval_resize_ratio=settings.get("eval_resize_ratio", EVAL_RESIZE_RATIO))
    run_dir = str(run_dir_of(checkpoint))
    output_dir = output_dir or os.path.join(run_dir, "linear")
    start = time.time()
    classifier, result = linear_probe(backbone, data, config, verbose)
    recipe_record = {"name": recipe, **config.to_dict()}
    save_classifier(classifier, output_dir, data.class_names, str(checkpoint),
                    str(settings.get("backbone", backbone.name)), recipe_record)
    record = {
        "checkpoint": str(checkpoint),
        "dataset": data.name,
        "split": data.query.name,
        "protocol": PROTOCOL,
        "recipe_choice": {"recipe": recipe, "reason": reason},
        "recipe": recipe_record,
        "image_size": int(classifier.input_shape[1]),
        "feature_dim": int(backbone.output_shape[-1]),
        **result,
    }
    with open(os.path.join(output_dir, RESULT_FILE), "w") as f:
        json.dump(record, f, indent=2)
    extra = {"recipe": recipe, "cache_features": config.cache_features,
             "epochs": None if config.full_batch else config.epochs, "checkpoint": str(checkpoint),
             "knn_top1": result["knn_top1"], "below_knn": result["below_knn"]}
    for metric in ("top1", "top5"):
        append_result(run_dir, dataset=data.name, split=data.query.name, metric=metric, value=result[metric],
                      protocol=PROTOCOL, **extra)
    return LinearProbeResult(result["top1"], result["top5"], result["knn_top1"], classifier, output_dir,
                            time.time() - start, result["backbone_unchanged"], record)
