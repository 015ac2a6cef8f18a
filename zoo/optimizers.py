"""Adam with epsilon where Algorithm 1 of the Adam paper (and PyTorch) put it: ``PaperAdam``.

Adam (Kingma & Ba, arXiv 1412.6980) keeps ``m_t = b1 m + (1 - b1) g`` and
``v_t = b2 v + (1 - b2) g^2``; Algorithm 1 of the paper, ``torch.optim.Adam`` and optax step::

    theta -= lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t)

``keras.optimizers.Adam`` (like TensorFlow 1's) uses the paper's "more efficient" rewrite with a
bias-corrected step size and epsilon outside the correction::

    theta -= lr_t * m_t / (sqrt(v_t) + eps),     lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)

which equals the first form with ``eps`` replaced by ``eps / sqrt(1 - b2^t)``: 31.6x larger at step
1, 4.5x after 50 steps (one Frappe_x1 epoch at batch 4096), 1.26x after 1,000. The two agree once
``sqrt(v_hat) >> eps``; they part where gradients are tiny, which is the start of every CTR model:
embedding rows drawn from N(0, 1e-4) give pairwise terms of order 1e-8 and gradients near epsilon,
so the two forms grow them at different speeds for the first thousands of steps. The reference
numbers the zoo is checked against (BARS, FuxiCTR on PyTorch) were trained with the first form.
Measured on Frappe_x1 (bench/results/quality_frappe_paper_adam.md, 5 paired seeds) it changes
neither DeepFM's AUC nor its log loss; ``zoo.protocol.adam(step="paper")`` selects it.

    >>> import keras, numpy as np
    >>> from zoo.optimizers import PaperAdam
    >>> w = keras.Variable(np.zeros(2, "float32"))
    >>> opt = PaperAdam(learning_rate=0.1, epsilon=1e-8)
    >>> opt.apply([keras.ops.convert_to_tensor(np.array([1e-9, 1.0], "float32"))], [w])
    >>> [round(float(x), 4) for x in np.asarray(w)]  # step 1: -lr * g / (|g| + eps); Keras' form: -0.0003, -0.1
    [-0.0091, -0.1]
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class PaperAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` stepping as Algorithm 1 of arXiv 1412.6980 and ``torch.optim.Adam``:
    ``theta -= lr * m_hat / (sqrt(v_hat) + epsilon)`` with the bias-corrected moments (module docstring).

    Arguments and config are ``keras.optimizers.Adam``'s; ``amsgrad`` is not supported (ValueError).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("PaperAdam: amsgrad is not supported (use keras.optimizers.Adam)")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_hat = ops.divide(m, 1 - ops.power(ops.cast(self.beta_1, dtype), step))
        v_hat = ops.divide(v, 1 - ops.power(ops.cast(self.beta_2, dtype), step))
        self.assign_sub(variable, ops.divide(ops.multiply(lr, m_hat), ops.add(ops.sqrt(v_hat), self.epsilon)))
