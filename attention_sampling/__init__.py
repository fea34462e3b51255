"""Attention sampling (Katharopoulos & Fleuret, 2019) built on the nn/ layer library."""

import nn.numba_cache  # noqa: F401,E402  (the samplers' kernels are cached the safe way too)
