"""Files for TensorBoard's Embedding Projector: `tensorboard --logdir DIR` shows the features as a map of images.

DIR/projector_config.pbtxt (tensorboard.plugins.projector) points at tensor.tsv (one feature row
a line), metadata.tsv (label and path of each row, with a header; only the path, without a header, when
no label is known, as the projector reads a single column) and sprite.png (the rows'
thumbnails on a square grid, at most 8192 px a side as the projector requires).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image
from tensorboard.plugins import projector

CONFIG_FILE = "projector_config.pbtxt"
TENSOR_FILE, METADATA_FILE, SPRITE_FILE = "tensor.tsv", "metadata.tsv", "sprite.png"
SPRITE_MAX_SIDE = 8192
THUMBNAIL = 32


def sprite(images: np.ndarray) -> tuple[np.ndarray, int]:
    """The thumbnails of `images` (N, H, W, 3) on a ceil(sqrt(N))-wide grid, and the thumbnail side."""
    per_side = max(1, math.ceil(math.sqrt(len(images))))
    side = max(1, min(THUMBNAIL, SPRITE_MAX_SIDE // per_side))
    grid = np.zeros((per_side * side, per_side * side, 3), np.uint8)
    for i, image in enumerate(images):
        thumb = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((side, side), Image.BILINEAR))
        r, c = divmod(i, per_side)
        grid[r * side:(r + 1) * side, c * side:(c + 1) * side] = thumb
    return grid, side


def write_projector(output_dir: str, features: np.ndarray, images: np.ndarray, labels: Sequence[str] | None,
                    paths: Sequence[str], name: str = "features") -> str:
    """Writes the projector's files for these rows (`labels` None when unknown) into `output_dir`; returns
    the config's path."""
    np.savetxt(os.path.join(output_dir, TENSOR_FILE), np.asarray(features, np.float32), delimiter="\t", fmt="%.6g")
    with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
        if labels is None:
            f.writelines(f"{_clean(path)}\n" for path in paths)
        else:
            f.write("label\tpath\n")
            f.writelines(f"{_clean(label)}\t{_clean(path)}\n" for label, path in zip(labels, paths))
    grid, side = sprite(images)
    Image.fromarray(grid).save(os.path.join(output_dir, SPRITE_FILE))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = TENSOR_FILE
    embedding.metadata_path = METADATA_FILE
    embedding.sprite.image_path = SPRITE_FILE
    embedding.sprite.single_image_dim.extend([side, side])
    projector.visualize_embeddings(output_dir, config)
    return os.path.join(output_dir, CONFIG_FILE)


def _clean(text: str) -> str:
    return str(text).replace("\t", " ").replace("\n", " ")
