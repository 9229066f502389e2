"""How much of a dataset is held in memory: the decoded-image budget, the shuffle buffer, the monitor's images."""

# Host memory a dataset may take when held decoded: TFDS datasets below it are read into
# arrays, folders below it are cached decoded; above it, images stream as encoded bytes.
DATA_MEMORY_BUDGET_BYTES = 2 * 1024**3
# Elements of encoded images kept in the shuffle buffer of a streamed TFDS dataset
# (about 1 GB of ImageNet JPEGs), on top of TFDS's shuffling of its record files.
STREAM_SHUFFLE_BUFFER = 10_000
# Keep decoded images in memory after the first epoch: "auto" when they fit in DATA_MEMORY_BUDGET_BYTES.
CACHE_DECODED = ("auto", "on", "off")
# Images of each labelled split a streamed dataset (folder, large TFDS) decodes for the kNN monitor.
MONITOR_IMAGES = 10_000
