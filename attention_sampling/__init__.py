"""Attention sampling (Katharopoulos & Fleuret, 2019) built on the nn/ layer library."""
