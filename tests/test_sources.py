"""Data sources: npz and prepared TFDS datasets, and the errors a user sees for bad ones."""

import numpy as np
import pytest

from simsiam_keras.data.npz import load_npz
from simsiam_keras.data.sources import eval_data, load_dataset


def test_npz_source_round_trip_and_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_train=np.arange(10) % 3,
             x_test=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y_test=np.array([0, 1, 2, 0]))
    source = load_dataset(f"npz:{path}")
    assert source.x_train.shape == (10, 8, 8, 3) and source.has_labels and source.num_classes == 3
    np.testing.assert_array_equal(source.x_train[..., 0], source.x_train[..., 2])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "no 'x_train' array"),
        ({"x_train": np.zeros((2, 8, 8, 3), np.float32)}, "must be uint8"),
        ({"x_train": np.zeros((2, 8, 8, 4), np.uint8)}, "must have shape"),
        ({"x_train": np.zeros((0, 8, 8, 3), np.uint8)}, "is empty"),
        ({"x_train": np.zeros((2, 8, 8, 3), np.uint8), "y_train": np.zeros(3, np.int64)}, "must be 2 integer labels"),
    ],
)
def test_bad_npz_is_a_clear_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(str(path))


def test_missing_npz_and_unprepared_tfds_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset(f"npz:{tmp_path}/nope.npz")
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_prepared_tfds_dataset_loads_offline(tmp_path):
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """A TFDS image dataset prepared on the spot (the machine has no internet)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(shape=(12, 12, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9, 0), "test": self._generate_examples(6, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                yield i, {"image": rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "label": i % 3}

    TinyShapes(data_dir=str(tmp_path)).download_and_prepare()
    source = load_dataset("tiny_shapes", data_dir=str(tmp_path))
    assert source.x_train.shape == (9, 12, 12, 3) and source.x_test.shape == (6, 12, 12, 3)
    assert source.has_labels and source.num_classes == 3 and source.x_unlabelled is None


class TinyPhotos:
    """Registered lazily: a TFDS dataset of variable-size JPEGs, so the source streams it like ImageNet."""

    builder = None

    @classmethod
    def prepare(cls, data_dir):
        import tensorflow_datasets as tfds

        if cls.builder is None:
            class TinyPhotosBuilder(tfds.core.GeneratorBasedBuilder):
                VERSION = tfds.core.Version("1.0.0")
                name = "tiny_photos"

                def _info(self):
                    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=2),
                    }))

                def _split_generators(self, dl_manager):
                    return {"train": self._generate_examples(12, 0), "test": self._generate_examples(6, 1)}

                def _generate_examples(self, n, seed):
                    rng = np.random.default_rng(seed)
                    for i in range(n):
                        shape = (20 + 3 * i, 30 - i, 3)
                        yield i, {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 2}

            cls.builder = TinyPhotosBuilder
        cls.builder(data_dir=str(data_dir)).download_and_prepare()


def test_large_or_variable_size_tfds_dataset_streams_encoded_images(tmp_path):
    from simsiam_keras.augment.recipe import SimSiamAugment
    from simsiam_keras.data.pipeline import two_view_dataset
    from simsiam_keras.data.tfds import TFDSImages

    TinyPhotos.prepare(tmp_path)
    source = load_dataset("tiny_photos", image_size=16, data_dir=str(tmp_path))
    assert isinstance(source.pretrain_images, TFDSImages) and len(source.pretrain_images) == 12
    assert source.x_train is None and not source.has_labels
    # The kNN monitor's splits are decoded once, as evaluation views at the image size, with their labels.
    monitor = eval_data("tiny_photos", data_dir=str(tmp_path)).in_memory(16, 1.0)
    (bank, _), (query, query_labels) = (split.arrays(16) for split in (monitor.bank, monitor.query))
    assert bank.shape == (12, 16, 16, 3) and query.shape == (6, 16, 16, 3) and bank.dtype == np.uint8
    assert sorted(query_labels) == [0, 0, 0, 1, 1, 1]
    x1, x2 = next(iter(two_view_dataset(source.pretrain_images, SimSiamAugment(16), 4)))
    assert x1.shape == x2.shape == (4, 16, 16, 3) and x1.dtype == "float32"
    assert not np.allclose(x1.numpy(), x2.numpy())
    # Two workers read disjoint parts of the split that together make all of it.
    shards = [{bytes(b) for b in source.pretrain_images.dataset(2, i, shuffle=False).as_numpy_iterator()} for i in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6 and not shards[0] & shards[1]
    # Image ids (a target bank's rows, Sec. 5.2) are the records' indices in the split, in every shuffled shard.
    records = [bytes(b) for b in source.pretrain_images.dataset(shuffle=False).as_numpy_iterator()]
    for shard in (0, 1):
        for data, image_id in source.pretrain_images.dataset(2, shard, image_ids=True).as_numpy_iterator():
            assert records[image_id] == bytes(data)
    _, _, ids = next(iter(two_view_dataset(source.pretrain_images, SimSiamAugment(16), 12, image_ids=True,
                                           deterministic=True)))
    assert sorted(ids.numpy().tolist()) == list(range(12))


def test_unprepared_imagenet_names_the_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet2012: not prepared .*manual_dir .*tfds build imagenet2012"):
        load_dataset("imagenet2012", data_dir=str(tmp_path))


def _touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_folder_with_splits_and_labels(tmp_path):
    from simsiam_keras.data.folders import list_image_folder

    for split, classes in {"train": ["cat", "dog"], "test": ["dog", "emu"]}.items():
        for c in classes:
            _touch(tmp_path / split / c / "a.jpg")
            _touch(tmp_path / split / c / "b.PNG")
    _touch(tmp_path / "train" / "cat" / "notes.txt")
    _touch(tmp_path / "train" / "cat" / ".hidden.jpg")
    splits = list_image_folder(str(tmp_path))
    assert set(splits) == {"train", "test"}
    assert splits["train"].class_names == splits["test"].class_names == ["cat", "dog", "emu"]
    assert list(splits["train"].labels) == [0, 0, 1, 1] and list(splits["test"].labels) == [1, 1, 2, 2]
    assert [f.rsplit("/", 2)[-2:] for f in splits["train"].files][:2] == [["cat", "a.jpg"], ["cat", "b.PNG"]]


def test_flat_folder_is_one_unlabelled_split(tmp_path):
    from simsiam_keras.data.folders import list_image_folder

    for name in ("1.jpg", "2.bmp", "3.gif"):
        _touch(tmp_path / name)
    splits = list_image_folder(str(tmp_path))
    assert list(splits) == ["train"] and splits["train"].labels is None and len(splits["train"].files) == 3


def test_class_folders_without_splits_are_a_labelled_train_split(tmp_path):
    from simsiam_keras.data.folders import list_image_folder

    _touch(tmp_path / "a" / "1.jpg")
    _touch(tmp_path / "b" / "1.jpg")
    splits = list_image_folder(str(tmp_path))
    assert list(splits) == ["train"] and list(splits["train"].labels) == [0, 1]


@pytest.mark.parametrize("layout", [[], ["readme.txt"], ["empty_class/"]])
def test_folder_without_images_is_a_clear_error(tmp_path, layout):
    from simsiam_keras.data.folders import list_image_folder

    for entry in layout:
        if entry.endswith("/"):
            (tmp_path / entry).mkdir()
        else:
            _touch(tmp_path / entry)
    with pytest.raises(ValueError, match="no images found"):
        list_image_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_image_folder(str(tmp_path / "missing"))


def test_a_streamed_dataset_is_resolved_once_and_evaluated_by_the_source_that_opened_it(tmp_path, monkeypatch):
    import tensorflow as tf

    from simsiam_keras.data import sources

    for split in ("train", "test"):
        for label, colour in (("dark", 20), ("light", 230)):
            for i in range(2):
                _touch(tmp_path / split / label / f"{i}.png",
                       tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(colour, tf.uint8))).numpy())
    parses = []
    parse = sources.parse_dataset
    monkeypatch.setattr(sources, "parse_dataset", lambda dataset: parses.append(dataset) or parse(dataset))
    source = load_dataset(f"folder:{tmp_path}")
    found, splits = sources.find_eval_data(source), sources.image_splits(source)
    assert parses == [f"folder:{tmp_path}"]  # the pretraining images' source gave their splits too
    assert isinstance(source.origin, sources.FolderSource) and len(source.train_stream) == 4
    assert found.name == source.name and found.class_names == ["dark", "light"]
    assert (found.bank.size, found.query.size) == (4, 4) and found.query.files == splits.splits["test"].files
