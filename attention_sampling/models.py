"""The two networks of attention sampling, composed from nn/ layers, and the model that holds both."""
import numpy as np

import nn
from .patches import BORDERS

# How a look's P features become one class vector (training.classification_weights).
AGGREGATES = ("attention", "mean")

# How the attention is trained, and so how the model classifies (training.train_step, training.predict).
ESTIMATORS = ("reinforce", "expectation")
# Patches of a look drawn with or without replacement.
SAMPLINGS = ("with", "without")
# What REINFORCE rewards: each patch alone (softmax(T f_i)[y]) or each look, its P patches together.
REWARDS = ("patch", "look")

NEGATIVE_SLOPE = 0.01
ATTENTION_INITS = ("random", "uniform")
# How the attention network's convolutions fill the view's border (AttentionNetwork).
ATTENTION_PADDINGS = ("zero", "reflect", "edge")
# Its 3x3 kernels: free, or mirror-symmetric, so that the network commutes with flips (AttentionNetwork).
ATTENTION_SYMMETRIES = ("none", "flips")


def mirror_symmetric(weight):
    """(kh, kw, C_in, C_out) -> its mean over the flips of rows and of columns: the nearest kernel that flipping
    either way leaves as it is (a linear projection, so it also projects a gradient onto those kernels)."""
    flipped = weight + weight[::-1]
    return (flipped + flipped[:, ::-1]) / 4


class AttentionNetwork(nn.Sequential):
    """(N, H, W, 3) full-resolution images -> (N, H // c, W // c) log attention, summing to one over h x w.

    a(x): average-pool by the scale factor c, 3 x [conv 3x3, BN, leaky ReLU], a 1x1 linear conv to one
    logit per cell, and a log-softmax over all cells together (over the cells a `mask` allows, when one is
    given: the others get probability zero, nn.LogSoftmax), kept outside the layer chain so that it can take
    the mask. The pooling stays outside the chain too: nothing is learned below it, so its (image-sized) input
    gradient is never computed; nor is the first
    convolution's (input_gradient=False). The leaky ReLUs work in place on the batch norms' outputs.

    padding: how its 3x3 convolutions fill the view's border: "zero" (the original method), or "reflect" /
    "edge" (nn.Conv2d), which keep a flat view flat up to its edge. With zeros, border cells differ from the
    rest of a near-flat view and batch norm magnifies the difference: a randomly drawn network starts with
    its weight on the border (docs/results/border/).

    symmetry "flips": every 3x3 kernel mirror-symmetric (mirror_symmetric: drawn, then projected; backward projects
    the gradient the same way, so Adam's elementwise steps keep it so). The network then commutes with flips of
    the view (padded by reflection or edge), so a mirror-symmetric spot draws attention centred on itself. Why:
    drawn freely, the kernels' composition peaks beside a spot, and trained on Megapixel MNIST the attention's mass
    near a digit sat 10 to 20 pixels off its centre, so its patches cut the digits
    (docs/experiments/megapixel-mnist.md, "Where the patches sit").

    init: "random" draws every layer (the original method); "uniform" then zeroes the last 1x1 convolution,
    so the untrained attention is exactly uniform. Why: the zero-padded convolutions and the batch norm make
    border cells stand out on a near-flat view (a logit gap of many standard deviations), and a random last
    layer turns that into a start with all the weight on a few border cells, which REINFORCE then only
    reinforces. From zero the last layer's gradient is still non-zero (its inputs are); the layers below
    receive gradient from the second step on, once it has moved. The other layers are drawn either way, from the same
    generator, so the feature network is the same under both.
    """

    def __init__(self, scale, in_channels=3, hidden=8, depth=3, rng=None, dtype=np.float32, init="random",
                 padding="zero", symmetry="none"):
        if init not in ATTENTION_INITS:
            raise ValueError(f"init must be one of {ATTENTION_INITS}, got {init!r}")
        if symmetry not in ATTENTION_SYMMETRIES:
            raise ValueError(f"symmetry must be one of {ATTENTION_SYMMETRIES}, got {symmetry!r}")
        if padding not in ATTENTION_PADDINGS:
            raise ValueError(f"padding must be one of {ATTENTION_PADDINGS}, got {padding!r}")
        rng = nn.init.default_rng(rng)
        layers = []
        channels = in_channels
        for index in range(depth):
            layers += [nn.Conv2d(channels, hidden, 3, padding="same" if padding == "zero" else padding, rng=rng,
                                 negative_slope=NEGATIVE_SLOPE, dtype=dtype, input_gradient=index > 0),
                       nn.BatchNorm2d(hidden, dtype=dtype),
                       nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
            channels = hidden
        last = nn.Conv2d(channels, 1, 1, rng=rng, dtype=dtype)
        if init == "uniform":
            for value in last.params.values():
                value[...] = 0
        layers.append(last)
        super().__init__(*layers)
        self.softmax = nn.SpatialLogSoftmax()
        self.scale = scale
        self.pool = nn.AvgPool2d(scale)
        self.symmetry = symmetry
        for weight in self._symmetric("params"):
            weight[...] = mirror_symmetric(weight)

    def _symmetric(self, attribute):
        """The weights (or gradients) of the 3x3 convolutions that symmetry "flips" keeps mirror-symmetric."""
        if self.symmetry == "none":
            return []
        return [getattr(layer, attribute)["weight"] for layer in self.layers
                if isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1)]

    def forward(self, images, training=True, mask=None):
        return self.forward_view(self.pool.forward(images, training), training, mask)

    def infer(self, images, mask=None):
        """forward(images, training=False) for inference only, its conv-BN-leaky triples fused (nn.Sequential.infer)."""
        return self.infer_view(self.pool.infer(images), mask)

    def forward_view(self, view, training=True, mask=None):
        """(N, h, w, 3) attention view, the images already pooled by c; (N, h, w) bool mask or None -> (N, h, w)
        log attention, -inf on the cells the mask leaves out.

        What forward does after its pooling: an image source that reads the view itself (a pyramid level of
        a slide) starts here."""
        return self._log_softmax(super().forward(view, training), mask)

    def infer_view(self, view, mask=None):
        """forward_view(view, training=False), fused for inference."""
        return self._log_softmax(super().infer(view), mask)

    def _log_softmax(self, logits, mask):
        """(N, h, w, 1) logits -> (N, h, w) log a: the one place the distribution over cells is formed."""
        if mask is not None:
            mask = np.asarray(mask, dtype=bool).reshape(logits.shape)
            if not mask.reshape(len(mask), -1).any(axis=1).all():
                raise ValueError("a cell mask leaves an image without any cell to sample")
        return self.softmax.forward(logits, mask=mask)[..., 0]

    def backward(self, grad_log_attention):
        """(N, h, w) dL/dlog a -> fills grads; returns nothing (images need no gradient)."""
        super().backward(self.softmax.backward(grad_log_attention[..., None]))
        for grad in self._symmetric("grads"):
            grad[...] = mirror_symmetric(grad)


class FeatureNetwork(nn.Sequential):
    """(M, S, S, 3) patches -> (M, C) unit-length class vectors.

    f: 4 x [conv 3x3 "same", leaky ReLU], global max pool, dense to C, L2-normalise.
    backward fills the gradients and returns None: the first convolution skips dL/d(patches), which
    nothing uses, and the leaky ReLUs work in place on the convolutions' outputs.
    """

    def __init__(self, n_classes, in_channels=3, hidden=16, depth=4, rng=None, dtype=np.float32):
        rng = nn.init.default_rng(rng)
        layers = []
        channels = in_channels
        for index in range(depth):
            layers += [nn.Conv2d(channels, hidden, 3, rng=rng, negative_slope=NEGATIVE_SLOPE, dtype=dtype,
                                 input_gradient=index > 0),
                       nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
            channels = hidden
        layers += [nn.GlobalMaxPool2d(), nn.Dense(channels, n_classes, rng=rng, dtype=dtype), nn.L2Normalize()]
        super().__init__(*layers)


class AttentionSamplingModel:
    """Both networks and the settings that make them one model: scale c, patch size S, patches per image
    P; the classifier temperature T (o = softmax(T x eq. 1)); what a patch sees past the image edge
    (border: "zero", "reflect" or "inside", patches.py); the uniform floor eps mixed into the attention
    when sampling (objective.floored_attention); how the attention network starts (attention_init, see
    AttentionNetwork); how its convolutions pad the view and whether its kernels are mirror-symmetric
    (attention_padding, attention_symmetry, the same); how the P features are combined (aggregate: "attention", eq. 1's weights a_i / sum a,
    or "mean", the Monte-Carlo mean of the sampled features, an estimate of E_a[f]); the estimator it is trained
    with ("reinforce" or "expectation") and its sampling ("with" or "without" replacement), which also decide how
    it classifies, so that a caller cannot score it the wrong way; the feature network's channels
    (feature_width, 16 as the method's lymphoma network; the paper's Megapixel MNIST network has 32). The defaults of the
    last six are the original method's (T = 1, zero padding of patches and of the attention's convolutions, no
    floor, random start, eq. 1); train.py's
    defaults are chosen by experiment (README).

    `params`, `grads` and `buffers` are flat dicts prefixed 'attention.' and 'features.', so one Adam
    walks both networks and one .npz holds the whole model.
    """

    def __init__(self, n_classes, scale=4, patch_size=50, n_patches=20, in_channels=3, seed=0,
                 dtype=np.float32, temperature=1.0, border="zero", floor=0.0, attention_init="random",
                 aggregate="attention", attention_padding="zero", estimator="reinforce", sampling="with",
                 feature_width=16, attention_symmetry="none"):
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        if not 0 <= floor < 1:
            raise ValueError(f"floor must be in [0, 1), got {floor}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        rng = np.random.default_rng(seed)
        self.config = dict(n_classes=int(n_classes), scale=int(scale), patch_size=int(patch_size),
                           n_patches=int(n_patches), in_channels=int(in_channels), temperature=float(temperature),
                           border=border, floor=float(floor), attention_init=attention_init, aggregate=aggregate,
                           attention_padding=attention_padding, estimator=estimator, sampling=sampling,
                           feature_width=int(feature_width), attention_symmetry=attention_symmetry)
        self.attention = AttentionNetwork(scale, in_channels, rng=rng, dtype=dtype, init=attention_init,
                                          padding=attention_padding, symmetry=attention_symmetry)
        self.features = FeatureNetwork(n_classes, in_channels, hidden=int(feature_width), rng=rng, dtype=dtype)

    n_classes = property(lambda self: self.config["n_classes"])
    scale = property(lambda self: self.config["scale"])
    patch_size = property(lambda self: self.config["patch_size"])
    n_patches = property(lambda self: self.config["n_patches"])
    temperature = property(lambda self: self.config["temperature"])
    border = property(lambda self: self.config["border"])
    floor = property(lambda self: self.config["floor"])
    attention_init = property(lambda self: self.config["attention_init"])
    aggregate = property(lambda self: self.config["aggregate"])
    attention_padding = property(lambda self: self.config["attention_padding"])
    attention_symmetry = property(lambda self: self.config["attention_symmetry"])
    estimator = property(lambda self: self.config["estimator"])
    replace = property(lambda self: self.config["sampling"] == "with")

    def _merged(self, attribute):
        merged = {f"attention.{k}": v for k, v in getattr(self.attention, attribute).items()}
        merged.update({f"features.{k}": v for k, v in getattr(self.features, attribute).items()})
        return merged

    params = property(lambda self: self._merged("params"))
    grads = property(lambda self: self._merged("grads"))
    buffers = property(lambda self: self._merged("buffers"))

    def state_dict(self):
        state = {f"params/{k}": v for k, v in self.params.items()}
        state.update({f"buffers/{k}": v for k, v in self.buffers.items()})
        return state

    def load_state_dict(self, state):
        """Load both networks, or neither: both are checked before either is touched."""
        parts = []
        for prefix, network in (("attention.", self.attention), ("features.", self.features)):
            network_state = {}
            for key, value in state.items():
                kind, _, name = key.partition("/")
                if name.startswith(prefix):
                    network_state[f"{kind}/{name[len(prefix):]}"] = value
            network.check_state_dict(network_state)
            parts.append((network, network_state))
        for network, network_state in parts:
            network.load_state_dict(network_state)

    def parameter_counts(self):
        return {"attention": self.attention.num_parameters(), "features": self.features.num_parameters()}

    def astype(self, dtype):
        self.attention.astype(dtype)
        self.features.astype(dtype)
        return self
