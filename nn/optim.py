"""Adam (Kingma & Ba, 2015) over a dict of parameters."""
import numpy as np


class Adam:
    """Bias-corrected Adam.  For each parameter p with gradient g, at step t:
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    State is keyed by parameter name so it can be saved and restored with the model.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self, params, grads):
        """Update every array in `params` in place from the same key in `grads`."""
        self.t += 1
        correction1 = 1 - self.beta1**self.t
        correction2 = 1 - self.beta2**self.t
        for key, p in params.items():
            g = grads[key]
            if key not in self.m:
                self.m[key] = np.zeros_like(p)
                self.v[key] = np.zeros_like(p)
            m, v = self.m[key], self.v[key]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * np.square(g)
            p -= (self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)).astype(p.dtype)

    def state_dict(self):
        state = {"t": np.array(self.t, dtype=np.int64)}
        # Copies: a snapshot must not change as training goes on (t is copied by int() too).
        state.update({f"m/{k}": v.copy() for k, v in self.m.items()})
        state.update({f"v/{k}": v.copy() for k, v in self.v.items()})
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.m = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("v/")}
