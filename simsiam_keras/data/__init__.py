"""Data: dataset specs and sources (synthetic, npz, folders, TFDS), decoding, and the two-view pipeline."""
