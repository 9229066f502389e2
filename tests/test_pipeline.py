"""The two-view pipeline: per-image, per-view draws, reproducible by seed."""

import numpy as np
import pytest

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import make_config
from simsiam_keras.data.pipeline import two_view_dataset


def first_batch(images, seed=0, batch_size=8, **kwargs):
    aug = SimSiamAugment(16, make_config("cifar").augment)
    ds = two_view_dataset(images, aug, batch_size, seed=seed, deterministic=True, **kwargs)
    x1, x2 = next(iter(ds))
    return x1.numpy(), x2.numpy()


def test_views_differ_between_images_and_between_views():
    # Eight copies of one image: any difference comes from the augmentation draws.
    image = np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    x1, x2 = first_batch(np.repeat(image, 8, axis=0), shuffle=False)
    assert x1.shape == x2.shape == (8, 16, 16, 3) and x1.dtype == np.float32
    assert 0 <= x1.min() and x1.max() <= 255 and x1.max() > 1  # pixel scale, not [0, 1]
    for i in range(8):
        assert not np.allclose(x1[i], x2[i]), "the two views of one image are identical"
        for j in range(i):
            assert not np.allclose(x1[i], x1[j]), "two images of one batch got the same draw"


def test_pipeline_is_reproducible_by_seed_and_differs_across_seeds_and_epochs():
    images = np.random.default_rng(1).integers(0, 256, (16, 20, 20, 3), dtype=np.uint8)
    a, _ = first_batch(images, seed=3)
    b, _ = first_batch(images, seed=3)
    c, _ = first_batch(images, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    aug = SimSiamAugment(16, make_config("cifar").augment)
    it = iter(two_view_dataset(images, aug, 16, seed=3, shuffle=False, deterministic=True))
    epoch1, epoch2 = next(it)[0].numpy(), next(it)[0].numpy()
    assert not np.allclose(epoch1, epoch2), "the same image got the same views in two epochs"


def test_keras_layer_can_be_the_augmentation():
    import keras

    images = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    layer = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)])
    x1, x2 = next(iter(two_view_dataset(images, layer, 8)))
    assert x1.shape == (8, 16, 16, 3) and not np.allclose(x1.numpy(), x2.numpy())


def test_batch_larger_than_dataset_is_an_error():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="larger than the dataset"):
        two_view_dataset(images, SimSiamAugment(8), 8)


def write_exotic_images(folder, size=(40, 30)):
    """Files that must decode to RGB: CMYK JPEG, 16-bit and grayscale PNG, RGBA PNG, palette BMP and GIF."""
    import io

    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8))
    gray16 = Image.fromarray(np.random.default_rng(2).integers(0, 65536, size, dtype=np.uint16))
    images = {"cmyk.jpg": (rgb.convert("CMYK"), "JPEG"), "gray16.png": (gray16, "PNG"), "gray.png": (rgb.convert("L"), "PNG"),
              "rgba.png": (rgb.convert("RGBA"), "PNG"), "palette.bmp": (rgb.convert("P"), "BMP"), "anim.gif": (rgb.convert("P"), "GIF")}
    paths = []
    for name, (image, fmt) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        (folder / name).write_bytes(buffer.getvalue())
        paths.append(str(folder / name))
    return paths


def write_image_files(folder, good=6, size=(40, 30)):
    """JPEG and PNG files that decode, and bad files that must be skipped: corrupt, truncated, empty, text."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(good):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        encoded = tf.io.encode_jpeg(image) if i % 2 else tf.io.encode_png(image)
        path = folder / f"good{i}.{'jpg' if i % 2 else 'png'}"
        path.write_bytes(encoded.numpy())
        paths.append(path)
    jpeg = (folder / "good1.jpg").read_bytes()
    bad = {"corrupt.jpg": rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), "truncated.jpg": jpeg[: len(jpeg) // 3],
           "empty.png": b"", "notes.jpg": b"not an image at all"}
    for name, content in bad.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return [str(p) for p in paths], len(bad)


def test_file_pipeline_skips_and_counts_bad_files(tmp_path):
    from simsiam_keras.data.pipeline import SkippedFiles

    files, num_bad = write_image_files(tmp_path)
    skipped = SkippedFiles()
    ds = two_view_dataset(files, SimSiamAugment(16), 2, repeat=False, skipped=skipped)
    batches = list(ds)
    assert sum(len(x1) for x1, _ in batches) == len(files) - num_bad == 6
    assert int(skipped.count.numpy()) == num_bad
    for x1, x2 in batches:
        assert x1.shape == (2, 16, 16, 3) and not np.allclose(x1.numpy(), x2.numpy())
        # No placeholder ever reaches training: a bad file would show up as an all-black view.
        assert all(float(tf_max) > 0 for tf_max in np.max(x1.numpy(), axis=(1, 2, 3)))


def test_file_pipeline_accepts_a_keras_layer_as_augmentation(tmp_path):
    import keras

    files, _ = write_image_files(tmp_path, size=(16, 16))
    layer = keras.layers.RandomFlip("horizontal")
    x1, x2 = next(iter(two_view_dataset(files, layer, 3, repeat=False)))
    assert x1.shape == (3, 16, 16, 3)


def _identity(image):
    return image


def _shard_images(images, num_shards=2, global_batch=8, **kwargs):
    """What each input worker's pipeline yields in one epoch, as in distribute_datasets_from_function."""
    import tensorflow as tf

    from simsiam_keras.data.pipeline import input_fn

    fn = input_fn(images, _identity, global_batch, seed=0, repeat=False, **kwargs)
    out = []
    for worker in range(num_shards):
        context = tf.distribute.InputContext(num_shards, worker, num_replicas_in_sync=num_shards)
        out.append([x1.numpy() for x1, _ in fn(context)])
    return out


def test_two_workers_see_disjoint_images_whose_union_is_the_epoch():
    # Image i is filled with the value i, so a view tells which image it came from.
    images = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None, None], (16, 4, 4, 3)).copy()
    worker0, worker1 = _shard_images(images)
    ids = [sorted(int(v[0, 0, 0]) for batch in worker for v in batch) for worker in (worker0, worker1)]
    assert all(batch.shape == (4, 4, 4, 3) for batch in worker0 + worker1)  # per-replica batches
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == list(range(16))


def test_two_workers_shard_image_files_too(tmp_path):
    import tensorflow as tf

    files = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        path.write_bytes(tf.io.encode_png(np.full((4, 4, 3), i * 10, np.uint8)).numpy())
        files.append(str(path))
    worker0, worker1 = _shard_images(files, global_batch=4)
    ids = [sorted(int(v[0, 0, 0]) // 10 for batch in worker for v in batch) for worker in (worker0, worker1)]
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == list(range(8))


def test_image_ids_name_the_image_of_each_pair_of_views(tmp_path):
    import tensorflow as tf

    # Image i is filled with the value 10 i, so a view tells which image it came from.
    values = np.arange(8, dtype=np.uint8) * 10
    images = np.broadcast_to(values[:, None, None, None], (8, 4, 4, 3)).copy()
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    for source, options in ((images, {}), (files, {}), (files, {"cache_decoded": True})):
        seen = []
        for x1, x2, ids in two_view_dataset(source, _identity, 4, image_ids=True, repeat=False, **options):
            assert ids.dtype == tf.int64
            np.testing.assert_array_equal(x1.numpy()[:, 0, 0, 0], values[ids.numpy()])
            np.testing.assert_array_equal(x2.numpy()[:, 0, 0, 0], values[ids.numpy()])
            seen += ids.numpy().tolist()
        assert sorted(seen) == list(range(8)), options
    # A resumed stream skips (image, id) pairs: it goes on with the ids the uninterrupted one has.
    stream = [ids.numpy() for _, _, ids in two_view_dataset(images, _identity, 2, seed=5, image_ids=True).take(6)]
    resumed = [ids.numpy() for _, _, ids in two_view_dataset(images, _identity, 2, seed=5, image_ids=True,
                                                              skip_batches=3).take(3)]
    np.testing.assert_array_equal(stream[3:], resumed)
    # By default the batches carry no ids; on the device the ids follow the crops and their seeds.
    assert len(two_view_dataset(images, _identity, 4).element_spec) == 2
    (crops, _), (seeds, _), ids = next(iter(two_view_dataset(images, SimSiamAugment(4), 4, image_ids=True,
                                                             augment_on="device")))
    assert crops.dtype == tf.uint8 and seeds.shape == (4, 2) and ids.dtype == tf.int64
    np.testing.assert_array_equal(crops.numpy()[:, 0, 0, 0], values[ids.numpy()])
    # Input workers see disjoint ids whose union is the epoch.
    from simsiam_keras.data.pipeline import input_fn

    fn = input_fn(images, _identity, 4, seed=0, repeat=False, image_ids=True)
    shards = [{int(i) for *_, ids in fn(tf.distribute.InputContext(2, w, 2)) for i in ids} for w in (0, 1)]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(8))


def test_workers_draw_different_augmentations():
    import tensorflow as tf

    from simsiam_keras.data.pipeline import input_fn

    images = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8), 16, axis=0)
    fn = input_fn(images, SimSiamAugment(16, make_config("cifar").augment), 8, seed=0, shuffle=False, deterministic=True)
    views = [next(iter(fn(tf.distribute.InputContext(2, w, 2))))[0].numpy() for w in (0, 1)]
    assert not np.allclose(views[0], views[1]), "both workers drew the same augmentations"


def test_decoded_cache_skips_bad_files_once_and_keeps_augmenting(tmp_path):
    from simsiam_keras.data.pipeline import SkippedFiles

    files, num_bad = write_image_files(tmp_path, size=(24, 24))
    skipped = SkippedFiles()
    ds = two_view_dataset(files, SimSiamAugment(16), 6, skipped=skipped, cache_decoded=True, deterministic=True)
    it = iter(ds)
    epoch1, epoch2 = next(it), next(it)  # 6 good images: one batch per epoch
    assert int(skipped.count.numpy()) == num_bad  # counted in the pass that filled the cache only
    assert epoch1[0].shape == (6, 16, 16, 3) and epoch1[0].dtype == np.float32
    assert not np.allclose(np.sort(epoch1[0].numpy().ravel()), np.sort(epoch2[0].numpy().ravel()))
    assert all(float(m) > 0 for m in np.max(epoch2[0].numpy(), axis=(1, 2, 3)))


def test_cache_decision():
    from simsiam_keras.data.images import EncodedImages, ImageFiles
    from simsiam_keras.data.pipeline import cache_pays

    class Huge(EncodedImages):
        def __len__(self):
            return 10**6

        def decoded_bytes_estimate(self):
            return 10**12

    assert not cache_pays(np.zeros((4, 8, 8, 3), np.uint8), "on")
    assert cache_pays(Huge(), "on") and not cache_pays(Huge(), "auto")
    assert not cache_pays(EncodedImages(), "auto")  # an unknown size is never cached by default
    with pytest.raises(ValueError, match="cache_decoded must be one of"):
        cache_pays(ImageFiles([]), "maybe")


def test_tf_data_service_workers_split_the_epoch_without_repeating_draws():
    import tensorflow as tf

    from simsiam_keras.data.pipeline import input_fn

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher.target.split("://")[1])) for _ in range(2)]
    images = np.broadcast_to(np.arange(32, dtype=np.uint8)[:, None, None, None], (32, 4, 4, 3)).copy()
    fn = input_fn(images, _identity, 4, data_service=dispatcher.target, repeat=False)
    ids = [int(v[0, 0, 0]) for x1, _ in fn(tf.distribute.InputContext()) for v in x1.numpy()]
    # Each service worker batches its own part (full batches only), so up to 3 images per worker may be left out.
    assert len(ids) == len(set(ids)) >= 32 - 2 * 3
    same = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8), 16, axis=0)
    fn = input_fn(same, SimSiamAugment(16), 4, seed=1, data_service=dispatcher.target)
    views = np.concatenate([x1.numpy() for x1, _ in fn(tf.distribute.InputContext()).take(6)]).reshape(24, -1)
    assert len(np.unique(views.round(3), axis=0)) == 24, "two service workers drew the same augmentations"
    del workers


def test_pipeline_runs_without_the_autotuner_whose_sleep_stalls_fit():
    # Issue 26: freeing an autotuned iterator sometimes waited out the autotuner's sleep (up to
    # seconds) at the end of every model.fit. Checked on the dataset fit gets, without iterating.
    aug = SimSiamAugment(16, make_config("cifar").augment)
    ds = two_view_dataset(np.zeros((8, 16, 16, 3), np.uint8), aug, 4)
    assert ds.options().autotune.enabled is False



def test_datasets_made_per_fit_or_per_evaluation_run_without_the_autotuner(tmp_path):
    """Freeing an iterator can wait out tf.data's autotuner sleep (up to 5 s, issue 26's slow mode): the
    pretraining stream and the evaluation splits (in memory or files; the kNN monitor's) turn it off."""
    from simsiam_keras.data.eval_splits import array_split, file_split

    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    files = write_image_files(tmp_path, good=4)[0][:4]
    datasets = {
        "two views": two_view_dataset(images, _identity, batch_size=4),
        "array split": array_split("test", images, np.zeros(8, np.int64)).batches(16, 1.0, 4),
        "file split": file_split("test", files, np.zeros(4, np.int64)).batches(16, 1.0, 4),
    }
    for name, ds in datasets.items():
        assert ds.options().autotune.enabled is False, name
        assert len(list(ds.take(1))) == 1, name
