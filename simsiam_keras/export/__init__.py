"""Export of the frozen backbone or classifier (SavedModel, ONNX) and loading from any saved form."""
