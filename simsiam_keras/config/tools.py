"""Settings of the tools beside training: the throughput benchmark's batches and simsiam-embed's thresholds."""

# `benchmark.py train`: the global batch timed for each preset, sized for one CPU or GPU
# (the recipes' batch of 512 would take minutes per step at 224 px on a CPU).
BENCHMARK_BATCH_SIZE = {"cifar": 256, "imagenet": 32}

# simsiam-embed: points shown in the TensorBoard projector, and the cosine similarity above which two
# images are reported as near-duplicates (chosen on re-encoded, resized and cropped digits against each
# digit's nearest distinct digit: see docs/embed.md, "The duplicate threshold").
PROJECTOR_POINTS = 10_000
DUPLICATE_THRESHOLD = 0.995
