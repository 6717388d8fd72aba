"""Diffusers-compatible linear diffusion models, attention processors and pipelines."""
