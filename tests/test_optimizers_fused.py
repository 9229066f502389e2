"""TorchSGD's update is TF's fused momentum kernel, and still PyTorch's rule on one and two replicas."""

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.method.optimizers import TorchSGD
from simsiam_keras.train.distribute import make_strategy

LR, MU, WD = 0.1, 0.9, 0.01
W0 = np.array([1.0, -2.0, 0.5])
GRADS = [np.array([0.5, 0.5, -1.0]), np.array([-1.0, 0.25, 2.0]), np.array([0.1, -0.3, 0.0])]


def torch_rule(grads, lrs):
    w, buf = W0.copy(), np.zeros_like(W0)
    for g, lr in zip(grads, lrs):
        buf = MU * buf + g + WD * w
        w = w - lr * buf
    return w, buf


def test_update_is_one_fused_momentum_op_per_variable():
    variables = [keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones((2, 2), "float32"))]
    opt = TorchSGD(learning_rate=LR, momentum=MU, l2=WD)
    opt.build(variables)
    graph = tf.function(lambda: opt.apply_gradients([(tf.ones_like(v), v) for v in variables])).get_concrete_function().graph
    kinds = [op.type for op in graph.get_operations()]
    assert kinds.count("ResourceApplyMomentum") == 2 and "AssignSubVariableOp" not in kinds


def test_two_replicas_apply_the_summed_gradient_with_pytorch_rule():
    strategy = make_strategy("mirrored", cpu_replicas=2)
    lrs = [LR, LR / 2, LR / 4]
    with strategy.scope():
        var = keras.Variable(W0.astype("float32"))
        opt_lr = keras.Variable(LR, trainable=False)
        opt = TorchSGD(learning_rate=lambda: opt_lr.value, momentum=MU, l2=WD)
        opt.build([var])

    @tf.function
    def step(grad):
        def replica_fn():
            # Each replica holds half of the gradient; the optimizer sums them.
            opt.apply_gradients([(tf.cast(grad, tf.float32) / 2, var)])
        strategy.run(replica_fn)

    for g, lr in zip(GRADS, lrs):
        opt_lr.assign(lr)
        step(g)
    w, buf = torch_rule(GRADS, lrs)
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(opt.momentums[0].numpy(), buf, rtol=1e-6)
    assert opt.iterations.numpy() == len(GRADS)
