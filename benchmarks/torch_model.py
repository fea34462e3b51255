"""Attention sampling in PyTorch: the yardstick the NumPy + Numba implementation is timed against.

The same method, in the same order, as attention_sampling/training.py, written the way one would in
PyTorch: autograd instead of hand-written backward passes, channels-last tensors, float32.

  attention net  avg-pool c, 3 x [conv 3x3·8, BN, leaky ReLU 0.01], conv 1x1, log-softmax over h·w
  sampling       torch.multinomial, with replacement, K = replicas · P cells per image
  extraction     advanced indexing into the image zero-padded just enough for the border patches
  feature net    4 x [conv 3x3·16 'same', leaky ReLU], global max pool, linear to C, L2-normalise
  eq. 1          logits = sum_i a_i f_i / sum_i a_i, the a_i held constant
  feature loss   cross-entropy, by backprop
  attention loss REINFORCE: -mean(adv · log a_i) with rewards softmax(f_i)[y] standardised per image,
                 minus λ·H(a); averaged over the images
  optimiser      one Adam over both networks

The layers sit at the same indices as in attention_sampling/models.py, so `load_numpy_params` can copy a
NumPy model's weights key by key (for the equivalence check in bench_step.py). PyTorch is imported here
and only here: the project never depends on it.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01


class GlobalMaxPool(nn.Module):
    """(M, C, H, W) -> (M, C)."""

    def forward(self, x):
        return x.amax(dim=(2, 3))


class L2Normalize(nn.Module):
    """(M, C) -> (M, C): x / sqrt(|x|^2 + eps), as nn.L2Normalize (F.normalize clamps |x| instead)."""

    def __init__(self, eps=1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.square().sum(dim=-1, keepdim=True) + self.eps)


# AttentionNetwork's paddings in PyTorch's names.
PADDING_MODES = {"zero": "zeros", "reflect": "reflect", "edge": "replicate"}


def attention_network(in_channels=3, hidden=8, depth=3, padding="zero"):
    """(N, C, h, w) pooled images -> (N, 1, h, w) attention logits; layer indices as AttentionNetwork, its
    3x3 convolutions padded as `padding` ("zero", "reflect" or "edge")."""
    layers, channels = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(channels, hidden, 3, padding=1, padding_mode=PADDING_MODES[padding]),
                   nn.BatchNorm2d(hidden), nn.LeakyReLU(NEGATIVE_SLOPE)]
        channels = hidden
    layers.append(nn.Conv2d(channels, 1, 1))
    return nn.Sequential(*layers)


def feature_network(n_classes, in_channels=3, hidden=16, depth=4):
    """(M, C, S, S) patches -> (M, n_classes) unit vectors; layer indices as FeatureNetwork."""
    layers, channels = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(channels, hidden, 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE)]
        channels = hidden
    layers += [GlobalMaxPool(), nn.Linear(channels, n_classes), L2Normalize()]
    return nn.Sequential(*layers)


class AttentionSampling(nn.Module):
    """Both networks and the sampling settings: scale c, patch size S, patches per image P."""

    def __init__(self, n_classes, scale=4, patch_size=50, n_patches=20, in_channels=3, attention_padding="zero"):
        super().__init__()
        self.scale, self.patch_size, self.n_patches = scale, patch_size, n_patches
        self.attention = attention_network(in_channels, padding=attention_padding)
        self.features = feature_network(n_classes, in_channels)
        self.to(memory_format=torch.channels_last)

    def log_attention(self, images):
        """(N, H, W, C) images -> (N, h·w) log a, one distribution over all cells per image."""
        pixels = images.permute(0, 3, 1, 2)  # a channels-last NCHW view, no copy
        low_resolution = F.avg_pool2d(pixels, self.scale)
        logits = self.attention(low_resolution)
        return F.log_softmax(logits.flatten(1), dim=1)

    def extract_patches(self, images, cells):
        """(N, H, W, C) images, (N, K, 2) cells -> (N·K, C, S, S) channels-last patches, zeros off the image.

        A cell (r, q) covers pixels [r c, r c + c); its patch starts at r c + floor((c - S) / 2)
        (attention_sampling/patches.py). Padding by that offset before and by S + offset - c after is
        exactly enough for every cell's patch to lie inside the padded image.
        """
        n, height, width, channels = images.shape
        size, scale = self.patch_size, self.scale
        offset = (scale - size) // 2
        before, after = max(0, -offset), max(0, size + offset - scale)
        padded = F.pad(images, (0, 0, before, after, before, after))  # pads W, then H; C untouched
        corners = cells * scale + (offset + before)                    # (N, K, 2) in padded pixels
        steps = torch.arange(size)
        rows = (corners[..., 0, None] + steps)[:, :, :, None]          # (N, K, S, 1)
        cols = (corners[..., 1, None] + steps)[:, :, None, :]          # (N, K, 1, S)
        image_index = torch.arange(n)[:, None, None, None]
        patches = padded[image_index, rows, cols]                      # (N, K, S, S, C)
        return patches.reshape(-1, size, size, channels).permute(0, 3, 1, 2)

    def classify(self, patches, weights):
        """(M·P, C, S, S) patches, (M, P) weights -> features (M, P, classes), logits (M, classes) of eq. 1."""
        m, p = weights.shape
        features = self.features(patches).reshape(m, p, -1)
        normalised = weights / weights.sum(dim=1, keepdim=True)
        return features, torch.einsum("mp,mpc->mc", normalised, features)


def sample_cells(attention, n_samples, width, generator=None):
    """(N, h·w) probabilities -> (N, K) flat indices and (N, K, 2) (row, col) cells, with replacement."""
    flat = torch.multinomial(attention, n_samples, replacement=True, generator=generator)
    return flat, torch.stack((flat // width, flat % width), dim=-1)


def _no_lap(name):
    pass


def train_step(model, optimizer, images, labels, generator=None, replicas=4, entropy_weight=0.01, lap=_no_lap,
               cells=None):
    """One update of both networks on (N, H, W, C) channels-last float32 images -> dict of metrics.

    `lap(name)` is called after each piece (bench_step.py times them); `cells`, (N, replicas·P, 2), replaces
    the sampler's draws (for checking against the NumPy implementation on the same cells). Gradients are
    zeroed at the start, so after the call they are this step's, as in the NumPy layers.
    """
    n, p = images.shape[0], model.n_patches
    k = replicas * p
    optimizer.zero_grad(set_to_none=True)
    log_attention = model.log_attention(images)                        # (N, h·w), with the autograd graph
    lap("attention net forward")

    with torch.no_grad():
        attention = log_attention.exp()
        if cells is None:
            flat, cells = sample_cells(attention, k, images.shape[2] // model.scale, generator)
        else:
            flat = cells[..., 0] * (images.shape[2] // model.scale) + cells[..., 1]
        lap("sample cells")
        weights = attention.gather(1, flat)                             # a_i: constants for the feature net
        lap("gather a_i")
        patches = model.extract_patches(images, cells)
        lap("extract patches")

    # Feature network: cross-entropy of eq. 1 per (image, replica), by backprop.
    replica_labels = labels.repeat_interleave(replicas)
    features, logits = model.classify(patches, weights.reshape(n * replicas, p))
    lap("feature net forward")
    loss = F.cross_entropy(logits, replica_labels)
    lap("eq.1 + cross-entropy")
    loss.backward()
    lap("feature backward")

    # Attention network: REINFORCE with a per-image baseline over all replicas' draws, plus the entropy bonus.
    with torch.no_grad():
        probabilities = features.softmax(dim=-1)
        rewards = probabilities.gather(2, replica_labels[:, None, None].expand(-1, p, 1)).reshape(n, k)
        spread = rewards.std(dim=1, correction=0, keepdim=True)  # the population std, as numpy's default
        advantage = (rewards - rewards.mean(dim=1, keepdim=True)) / (spread + 1e-6)
    lap("rewards + advantage")
    surrogate = -(advantage * log_attention.gather(1, flat)).mean(dim=1)
    lap("REINFORCE gradient")
    entropy = -(log_attention.exp() * log_attention).sum(dim=1)
    lap("entropy gradient")
    ((surrogate - entropy_weight * entropy).mean()).backward()
    lap("attention net backward")

    optimizer.step()
    lap("optimizer")
    return {"loss": loss.item(), "accuracy": float((logits.argmax(dim=1) == replica_labels).float().mean()),
            "reward": float(rewards.mean()), "entropy": entropy.mean().item()}


@torch.no_grad()
def predict(model, images, generator=None, n_patches=None):
    """(N, H, W, C) images -> (N, classes) probabilities, with batch-norm running statistics."""
    was_training = model.training
    model.eval()
    p = n_patches or model.n_patches
    log_attention = model.log_attention(images)
    attention = log_attention.exp()
    flat, cells = sample_cells(attention, p, images.shape[2] // model.scale, generator)
    patches = model.extract_patches(images, cells)
    _, logits = model.classify(patches, attention.gather(1, flat))
    model.train(was_training)
    return logits.softmax(dim=-1)


def load_numpy_params(model, params, buffers):
    """Copy a NumPy AttentionSamplingModel's `params` and `buffers` dicts into `model` (same layer indices).

    Conv weights go from (kh, kw, C_in, C_out) to (C_out, C_in, kh, kw), dense ones from (in, out) to
    (out, in); batch norm's gamma and beta are its weight and bias.
    """
    renamed = {"gamma": "weight", "beta": "bias"}
    with torch.no_grad():
        for key, value in list(params.items()) + list(buffers.items()):
            network, index, name = key.split(".")
            module = getattr(model, network)[int(index)]
            if isinstance(module, nn.Conv2d) and name == "weight":
                value = value.transpose(3, 2, 0, 1)
            elif isinstance(module, nn.Linear) and name == "weight":
                value = value.T
            getattr(module, renamed.get(name, name)).copy_(torch.from_numpy(np.ascontiguousarray(value)))


def numpy_grads(model):
    """The model's gradients as NumPy arrays in the NumPy model's layouts and keys (inverse of the copy above)."""
    renamed = {"weight": "gamma", "bias": "beta"}
    grads = {}
    for network in ("attention", "features"):
        for index, module in enumerate(getattr(model, network)):
            for name, parameter in module.named_parameters():
                value = parameter.grad.numpy()
                if isinstance(module, nn.Conv2d) and name == "weight":
                    value = value.transpose(2, 3, 1, 0)
                elif isinstance(module, nn.Linear) and name == "weight":
                    value = value.T
                elif isinstance(module, nn.BatchNorm2d):
                    name = renamed[name]
                grads[f"{network}.{index}.{name}"] = value
    return grads
