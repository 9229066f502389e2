"""The PyTorch bridge: SimSiam checkpoints from PyTorch codes in, torchvision and detectron2 weights out.

`torch_format` reads and writes PyTorch's files without torch (and without unpickling anything but
tensors and plain containers), `layouts` knows where each code keeps its weights, and `checkpoint`
converts: `from_torch` and `to_torch`.
"""

from simsiam_keras.convert.checkpoint import from_torch, load_torch_model, to_torch, torchvision_state_dict

__all__ = ["from_torch", "load_torch_model", "to_torch", "torchvision_state_dict"]
