"""LARS (You et al. 2017), as the SimSiam linear classifier is trained with it (Appendix A).

Keras has no LARS. This one reproduces the optimizer the SimSiam authors' `main_lincls.py`
uses: `torch.optim.SGD` (momentum 0.9) wrapped in apex's `LARC(trust_coefficient=0.001,
clip=False)`. Per variable w with gradient g, weight decay wd and trust coefficient eta:

    if ||w|| > 0 and ||g|| > 0:
        g = (g + wd * w) * eta * ||w|| / (||g|| + wd * ||w|| + eps)   # the trust ratio
    buf = momentum * buf + g                                          # PyTorch's momentum form
    w   = w - lr * buf

Norms are Frobenius norms over the whole variable. When either norm is zero (e.g. the
classifier's bias, initialised to 0, at the first step) the gradient is used as is, without
decay and without adaptation: LARC's rule. LARC adapts *every* variable, biases included;
that is the default here (`exclude_1d=False`). `exclude_1d=True` instead gives 1-D variables
(biases, BN scales/offsets) plain momentum SGD with no decay and no trust ratio, the
convention of MoCo v3's and SimCLR's LARS. Both agree on the weight matrix; with the linear
probe's wd = 0 the trust ratio is eta * ||w|| / (||g|| + eps) in either convention.
"""

from __future__ import annotations

import keras
from keras import ops

from simsiam_keras.method.optimizers import momentum_update


@keras.saving.register_keras_serializable(package="simsiam_keras")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling on top of PyTorch-style momentum SGD (apex LARC, no clipping).

    `l2` is the coupled weight decay (wd above); Keras' own decoupled `weight_decay` is not used.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        l2: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        exclude_1d: bool = False,
        name: str = "lars",
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError("LARS takes its (coupled) weight decay as `l2`, not `weight_decay`")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.l2 = float(l2)
        self.trust_coefficient = float(trust_coefficient)
        self.eps = float(eps)
        self.exclude_1d = bool(exclude_1d)

    def build(self, variables) -> None:
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def adapted_gradient(self, gradient, variable):
        """The gradient after weight decay and the trust ratio (before momentum)."""
        if self.exclude_1d and len(variable.shape) <= 1:
            return gradient
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
        l2 = ops.cast(self.l2, variable.dtype)
        ratio = self.trust_coefficient * w_norm / (g_norm + l2 * w_norm + self.eps)
        adapted = (gradient + l2 * variable) * ratio
        return ops.where(ops.logical_and(w_norm > 0, g_norm > 0), adapted, gradient)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = self.adapted_gradient(ops.cast(gradient, variable.dtype), variable)
        momentum_update(self, variable, self.momentums[self._get_variable_index(variable)], gradient, learning_rate,
                        self.momentum)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("weight_decay", None)
        return {
            **config,
            "momentum": self.momentum,
            "l2": self.l2,
            "trust_coefficient": self.trust_coefficient,
            "eps": self.eps,
            "exclude_1d": self.exclude_1d,
        }
