"""The PyTorch bridge: SimSiam weights from PyTorch codes in, torchvision and detectron2 weights out.

`torch_format` reads and writes PyTorch's files without torch (and without unpickling anything but
tensors and plain containers), `layouts` knows where each code keeps its weights, `state_dict`
names our ResNets' weights as torchvision and detectron2 do, and `architecture` reads which model a
file holds. `torch_to_keras.load_torch_model` builds our model with a file's weights,
`converted_run.from_torch` writes it as a run (or an export), `keras_to_torch.to_torch` writes ours
for PyTorch.
"""

from simsiam_keras.convert.converted_run import from_torch
from simsiam_keras.convert.keras_to_torch import to_torch
from simsiam_keras.convert.state_dict import torchvision_state_dict
from simsiam_keras.convert.torch_to_keras import load_torch_model

__all__ = ["from_torch", "load_torch_model", "to_torch", "torchvision_state_dict"]
