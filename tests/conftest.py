"""Test set-up: two logical CPU devices, so multi-replica code runs without GPUs.

The split must happen before TensorFlow initialises its devices, hence in `pytest_configure`,
before any test module is imported.
"""

import gc
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CPU_REPLICAS = 2


def pytest_configure(config: pytest.Config) -> None:
    """Imports the package (first, as the commands do: it turns on oneDNN before TensorFlow loads)
    and splits the CPU, in each process that runs tests.

    The xdist controller of `-n 2` runs none: without TensorFlow it starts in a second, instead
    of competing for the CPU with the two workers importing it (8 s of CPU each).
    """
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import simsiam_keras  # noqa: F401
    from simsiam_keras.train.distribute import split_cpu

    split_cpu(CPU_REPLICAS)


# Expensive fixtures shared by several tests: under `pytest -n 2 --dist loadgroup` (the README's
# command) the tests that use one run on the same worker, so each is built once.
SHARED_FIXTURES = ("synthetic_run", "workdir", "tree", "run_dir", "cifar_model", "decoded", "digits_run", "r50_run")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups the users of each shared fixture, and puts the tests marked slow first, so that two
    workers finish together instead of one starting a long test at the end."""
    for item in items:
        for name in SHARED_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
                break
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Moves everything imported by now (TensorFlow, Keras, torch...) out of the garbage collector's sight.

    Those objects live as long as the process; without this, every full collection walks them
    all: 0.2 s for the one `clear_session` runs after each test (55 tests of test_augment.py,
    test_lars.py and test_results.py: 12.2 s of teardown -> 0.2 s).
    """
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Freezes what outlives each test (shared fixtures, TensorFlow's caches) the same way.

    The collection `clear_session` runs after a test then walks only what that test made: full
    collections in the suite took 190 s over two workers, 19 s with this; its wall time 836 s ->
    691 s (that run also had automatic collection off at the start, which the suite's
    subprocesses turn back on; not kept, not measured apart). What a frozen object holds is not
    freed if it is dropped later (a fixture's model): the workers' peak RSS stayed the same
    (2.6-2.7 GB). A full collection wherever a module ends, to free those, cost 60 s.
    """
    yield
    gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seeds and a float32 policy."""
    import keras  # here, not at the top: the xdist controller must not load TensorFlow

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.backend.clear_session()


@pytest.fixture
def tiny_config():
    """A SimSiam config small enough to train in seconds on a CPU."""
    from simsiam_keras.config import make_config

    return make_config(
        "quickstart",
        image_size=16,
        backbone_width=8,
        proj_dim=64,
        proj_hidden_dim=64,
        pred_hidden_dim=16,
        batch_size=32,
        epochs=2,
        knn_every=0,
        base_lr=0.4,
    )


@pytest.fixture(scope="session")
def npz_dataset(tmp_path_factory):
    """A tiny labelled .npz (64 train, 16 test images of 16x16, 4 classes) for command-line runs."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8), y_train=np.arange(64) % 4,
             x_test=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), y_test=np.arange(16) % 4)
    return path


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
    """One short pretraining on the synthetic data, shared by the tests that need a trained encoder.

    The quickstart recipe (width 8, lr 0.8, 3 epochs at batch 128) with 40 steps an epoch on 2,560
    images, the kNN monitor at the start and the end (kNN 0.210 -> 0.360; at lr 0.4 4 epochs
    reach 0.314). Its `config` rebuilds the random initialisation it started
    from (`keras.utils.set_random_seed(config.seed)` then `build_simsiam(config)`).
    """
    from types import SimpleNamespace

    import keras

    from simsiam_keras.config import make_config
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.data.synthetic import make_synthetic
    from simsiam_keras.train.pretrain import pretrain

    run = tmp_path_factory.mktemp("synthetic_run")
    source = from_arrays("synthetic", **make_synthetic(num_train=2560, num_test=500, seed=0))
    config = make_config("quickstart", backbone_width=8, base_lr=0.8, epochs=3, steps_per_epoch=40, knn_every=3,
                         output_dir=str(run))
    keras.utils.set_random_seed(config.seed)
    result = pretrain(config, source=source, verbose=0)
    keras.backend.clear_session()
    return SimpleNamespace(dir=run, config=config, source=source, knn_before=result.knn_before,
                           history=result.history)
