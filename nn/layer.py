"""The interface every layer keeps: forward caches, backward consumes, params and grads share keys."""
import numpy as np


def check_spatial(layer, input_shape, output_hw):
    """Raise ValueError if a layer is given, or would produce, a spatial map with no positions.

    NumPy and the kernels accept empty arrays without complaint, and a max over no positions returns
    whatever the output buffer held: an empty map must stop where it arises, naming the layer and sizes.
    """
    height, width = input_shape[1], input_shape[2]
    out_height, out_width = output_hw
    if min(height, width, out_height, out_width) < 1:
        raise ValueError(f"{layer!r} on a {height}x{width} input gives a {out_height}x{out_width} output: "
                         "a spatial map needs at least one row and one column")


class Layer:
    """A differentiable function with parameters.

    `forward(x, training)` returns the output and caches what `backward` needs;
    `backward(grad_out)` returns dL/dx and fills `grads` (same keys as `params`);
    `infer(x)` is forward in evaluation mode for inference only (no backward follows), which a layer
    or a chain may compute a faster way.
    `buffers` hold state that is saved but not trained (e.g. batch-norm running statistics).
    """

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}

    def forward(self, x, training=True):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def infer(self, x):
        return self.forward(x, training=False)

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def zero_grads(self):
        for key, value in self.params.items():
            self.grads[key] = np.zeros_like(value)

    def astype(self, dtype):
        """Cast parameters and buffers in place (float64 for gradient checks); returns self."""
        for store in (self.params, self.buffers):
            for key in store:
                store[key] = store[key].astype(dtype)
        self.zero_grads()
        return self

    def num_parameters(self):
        return int(sum(p.size for p in self.params.values()))

    def state_dict(self):
        """Flat dict of arrays: parameters under 'params/', buffers under 'buffers/'."""
        state = {f"params/{k}": v for k, v in self.params.items()}
        state.update({f"buffers/{k}": v for k, v in self.buffers.items()})
        return state

    def load_state_dict(self, state):
        """Copy arrays into this layer, checking that every key and shape matches."""
        expected = self.check_state_dict(state)
        for key, target in expected.items():
            # Copy in place so optimisers and containers that hold references keep seeing the same arrays.
            target[...] = state[key]

    def check_state_dict(self, state):
        """Raise ValueError unless `state` has exactly this layer's keys and shapes; returns our own state."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        # Every shape is checked before anything is copied, so a refused state leaves the model untouched.
        for key, target in expected.items():
            shape = np.shape(state[key])
            if shape != target.shape:
                raise ValueError(f"state '{key}' has shape {shape}, the model expects {target.shape}")
        return expected

    def __repr__(self):
        return f"{type(self).__name__}()"
