"""Networks: PyTorch-equivalent layers, the backbones, and the projector and predictor heads (Sec. 3)."""
