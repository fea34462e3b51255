"""A chain of layers."""
from .activations import LeakyReLU
from .batchnorm import BatchNorm2d
from .conv import Conv2d, SparseGradient
from .layer import Layer
from .pooling import GlobalMaxPool2d


class Sequential(Layer):
    """Applies its layers in order; parameters are exposed flat as '<index>.<name>'."""

    def __init__(self, *layers):
        # No super().__init__(): params, grads and buffers are views built from the layers below.
        self.layers = list(layers)
        self.fused = {}  # index of a layer skipped by the last forward -> index of the layer it is fused into

    def forward(self, x, training=True):
        """Each layer in turn; a Conv2d or BatchNorm2d followed by an in-place LeakyReLU (slope >= 0) runs as one
        layer: it applies the activation as it stores its output and its derivative in backward, so the
        LeakyReLU's own passes are skipped (its index in self.fused until the next forward). A Conv2d ->
        LeakyReLU -> GlobalMaxPool2d runs as one layer too: the convolution keeps only its output's maxima."""
        self.fused = {}
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            following = self.layers[i + 1] if i + 1 < len(self.layers) else None
            after = self.layers[i + 2] if i + 2 < len(self.layers) else None
            if (isinstance(layer, (Conv2d, BatchNorm2d)) and isinstance(following, LeakyReLU) and following.inplace
                    and following.negative_slope >= 0):
                if isinstance(layer, Conv2d) and isinstance(after, GlobalMaxPool2d):
                    x = layer.forward(x, training, negative_slope=following.negative_slope, global_max=True)
                    self.fused.update({i + 1: i, i + 2: i})
                    i += 3
                    continue
                x = layer.forward(x, training, negative_slope=following.negative_slope)
                self.fused[i + 1] = i
                i += 2
            else:
                x = layer.forward(x, training)
                i += 1
        return x

    def infer(self, x):
        """forward(x, training=False) for inference only. Each Conv2d -> [BatchNorm2d] -> [LeakyReLU] ->
        [GlobalMaxPool2d] run runs as one convolution: the batch norm's evaluation-mode affine is folded into
        the weights, the leaky ReLU applied as the outputs are stored and a global max pool kept as they are
        computed, so none makes a pass of its own over the activations. The fused convolutions cache nothing,
        so no backward may follow."""
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            if not isinstance(layer, Conv2d):
                x = layer.infer(x)
                i += 1
                continue
            i += 1
            scale = shift = slope = None
            if i < len(self.layers) and isinstance(self.layers[i], BatchNorm2d):
                scale, shift = self.layers[i].evaluation_affine()
                i += 1
            if i < len(self.layers) and isinstance(self.layers[i], LeakyReLU):
                slope = self.layers[i].negative_slope
                i += 1
            global_max = i < len(self.layers) and isinstance(self.layers[i], GlobalMaxPool2d)
            x = layer.infer(x, scale, shift, slope, global_max)
            i += global_max
        return x

    def backward(self, grad_out):
        """Each layer backwards, the LeakyReLUs and GlobalMaxPool2ds fused by the last forward skipped. Those
        fusions hold in the layers that ran them until their backward: a layer's own forward in between would
        have undone one, and the activation's derivative or the maxima's positions would be lost, so that is
        an error, not a silently wrong gradient."""
        fused, self.fused = self.fused, {}  # one backward per forward
        for i in reversed(range(len(self.layers))):
            if i in fused:
                owner = fused[i]
                undone = self.layers[owner].activation is None or (
                    isinstance(self.layers[i], GlobalMaxPool2d) and self.layers[owner].global_argmax is None)
                if undone:
                    raise RuntimeError(f"Sequential.backward: layer {owner} ran forward on its own since "
                                       f"Sequential.forward fused it with layer {i}; run Sequential.forward again")
                continue
            layer = self.layers[i]
            if isinstance(layer, Conv2d):
                # A sparse dL/dx stays compact from one convolution to the next (Conv2d.backward).
                grad_out = layer.backward(grad_out, keep_sparse=True)
            else:
                grad_out = layer.backward(grad_out.dense() if isinstance(grad_out, SparseGradient) else grad_out)
        return grad_out.dense() if isinstance(grad_out, SparseGradient) else grad_out

    def _flat(self, attribute):
        return {f"{i}.{key}": value
                for i, layer in enumerate(self.layers)
                for key, value in getattr(layer, attribute).items()}

    # Built on every access from the layers' own dicts, so there is one source of truth.
    params = property(lambda self: self._flat("params"))
    grads = property(lambda self: self._flat("grads"))
    buffers = property(lambda self: self._flat("buffers"))

    def zero_grads(self):
        for layer in self.layers:
            layer.zero_grads()

    def astype(self, dtype):
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"
