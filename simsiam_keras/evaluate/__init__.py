"""Evaluation of frozen features: weighted kNN (monitor and evaluation), the linear probe, curves, results."""
