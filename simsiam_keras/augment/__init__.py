"""Augmentation (Appendix A): one view of one image, per-image randomness, torchvision semantics."""
