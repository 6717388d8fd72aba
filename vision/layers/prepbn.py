"""PRepBN: progressive re-parameterised BatchNorm for transformers (SLAB, arXiv:2405.11582, Sec. 3.1).

``RepBN(x) = BN(x) + α·x`` over the channels of a token tensor ``(B, N, C)`` (statistics over batch and
tokens). ``LinearNorm`` trains with ``λ·LN(x) + (1 − λ)·RepBN(x)``, λ decaying linearly from 1 to 0 over
``step`` iterations (paper Eq. 4), and is ``RepBN`` alone in eval. Both keep the official parameter and buffer
names (``alpha``, ``bn.*``; ``warm``, ``iter``, ``total_step``, ``norm1``, ``norm2``) so official checkpoints
load unchanged.

In eval ``RepBN`` is a per-channel affine map ``a ⊙ x + b`` with ``a = γ/√(σ²+ε) + α`` and
``b = β − γμ/√(σ²+ε)``; the ``fold_*`` helpers merge it into the neighbouring linear / conv layers for
deployment (``reparameterize()`` on the model blocks, timm's ``reparameterize_model`` convention).
"""

from __future__ import annotations

import torch
from torch import nn

from .folding import DerivedTensorCache, at_least_fp32, bn_uses_running_stats

__all__ = [
    "ChannelAffine",
    "LinearNorm",
    "RepBN",
    "fold_affine_after_conv",
    "fold_affine_before_conv",
    "fold_affine_before_linear",
    "norm_affine",
    "set_prepbn_step",
]


class ChannelAffine(nn.Module):
    """``x * weight + bias`` over the last dim: a folded RepBN that had no linear layer to merge into."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


class RepBN(nn.Module):
    """``BatchNorm1d(C)`` over the channels of ``(B, N, C)`` tokens plus a learned scalar ``alpha`` times ``x``.

    The official module normalises the transposed ``(B, C, N)`` view; here the BatchNorm sees the tokens as
    ``(B·N, C)`` rows (the same per-channel statistics over batch and tokens, the same running-statistics
    update), so no transpose copies are made, and ``BN(x) + α·x`` is one ``addcmul``. In eval (running
    statistics) the whole map is the per-channel affine ``a ⊙ x + b`` (:meth:`affine`): one ``addcmul`` pass
    over the tokens, with ``(a, b)`` kept between grad-free calls (:class:`~linzoo.vision.layers.folding.
    DerivedTensorCache`).
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(dim, eps=eps, momentum=momentum)
        self._affine_cache = DerivedTensorCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"RepBN expects tokens of shape (B, N, C), got {tuple(x.shape)}")
        if bn_uses_running_stats(self.bn):
            sources = [self.alpha, *self.bn.parameters(), *self.bn.buffers()]
            p = self._affine_cache.get(sources, self._affine_dict, device_type=x.device.type)
            return torch.addcmul(p["b"], x, p["a"])
        y = self.bn(x.reshape(-1, x.shape[-1])).view(x.shape)
        return torch.addcmul(y, x, self.alpha)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` (differentiable, in the parameters' dtype) with ``RepBN(x) = a ⊙ x + b`` under the running
        statistics (whatever the mode, for the deployment folds)."""
        bn, f = self.bn, at_least_fp32
        scale = torch.rsqrt(f(bn.running_var) + bn.eps)
        if bn.weight is not None:
            scale = scale * f(bn.weight)
        shift = -f(bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + f(bn.bias)
        dtype = self.alpha.dtype
        return (scale + f(self.alpha)).to(dtype), shift.to(dtype)

    def _affine_dict(self) -> dict[str, torch.Tensor]:
        a, b = self._affine()
        return {"a": a, "b": b}

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` with ``RepBN(x) = a ⊙ x + b`` in eval (running statistics), detached."""
        a, b = self._affine()
        return a.detach(), b.detach()

    def fuse(self) -> ChannelAffine:
        """The eval-mode map as a :class:`ChannelAffine` (used by ``timm.utils.reparameterize_model``)."""
        return ChannelAffine(*self.affine())


class LinearNorm(nn.Module):
    """Progressive LN → RepBN (paper Eq. 4), official layout: buffers ``warm``, ``iter``, ``total_step``.

    Training: for the first ``warm`` steps ``LN(x)``; then ``λ·LN(x) + (1−λ)·RepBN(x)`` with
    ``λ = r0·iter/total_step``, ``iter`` counting down from ``step`` to 0. Eval: ``RepBN(x)`` only.

    The counter either counts training forwards itself (the official behaviour, one decrement per forward), or,
    once :meth:`set_step` has been called, follows the step the trainer sets (``model.set_prepbn_step(step)``
    before each training step), which stays right after resume, with gradient accumulation, gradient
    checkpointing (a recomputed forward sees the same λ) and DDP (every rank sets the same value).
    """

    def __init__(
        self,
        dim: int,
        step: int = 300000,
        warm: int = 0,
        r0: float = 1.0,
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if step <= 0:
            raise ValueError(f"step must be a positive number of iterations, got {step}")
        if warm < 0:
            raise ValueError(f"warm must be >= 0, got {warm}")
        self.register_buffer("warm", torch.tensor(warm))
        self.register_buffer("iter", torch.tensor(step))
        self.register_buffer("total_step", torch.tensor(step))
        self.r0 = r0
        self.warm_steps = warm
        self.externally_driven = False
        # Host mirror of ``warm`` so the warm-up branch is taken without reading the buffer: a ``bool(tensor)``
        # per layer and step synchronised the GPU in eager training and broke the torch.compile graph.
        self._warm_left = warm
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.norm2 = RepBN(dim)

    def set_step(self, step: int) -> None:
        """Set the schedule to global optimisation step ``step`` (0-based) and stop counting forwards."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        warm_left = max(self.warm_steps - step, 0)
        done = max(step - self.warm_steps, 0)
        self.warm.fill_(warm_left)
        self._warm_left = warm_left
        self.iter.fill_(max(int(self.total_step) - done, 0))
        self.externally_driven = True

    def lam(self) -> torch.Tensor:
        """Current weight λ of the LayerNorm branch."""
        return self.r0 * self.iter / self.total_step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._warm_left = int(self.warm)  # resumed mid-warm-up: the mirror follows the loaded buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.norm2(x)
        if self._warm_left > 0:  # (under torch.compile each warm-up step recompiles; warm-up defaults to 0)
            if not self.externally_driven:
                self.warm.sub_(1)
                self._warm_left -= 1
            return self.norm1(x)
        lam = self.lam()
        if not self.externally_driven:
            self.iter.sub_((self.iter > 0).to(self.iter.dtype))  # counts down to 0, no host sync
        return lam * self.norm1(x) + (1 - lam) * self.norm2(x)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` of the eval-mode map (the RepBN branch)."""
        return self.norm2.affine()

    def fuse(self) -> ChannelAffine:
        return ChannelAffine(*self.affine())


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` of an eval-mode :class:`RepBN`, :class:`LinearNorm` or :class:`ChannelAffine`."""
    if isinstance(norm, (RepBN, LinearNorm)):
        return norm.affine()
    if isinstance(norm, ChannelAffine):
        return norm.weight.detach(), norm.bias.detach()
    raise ValueError(f"norm must be RepBN, LinearNorm or ChannelAffine, got {type(norm).__name__}")


@torch.no_grad()
def fold_affine_before_linear(a: torch.Tensor, b: torch.Tensor, linear: nn.Linear) -> nn.Linear:
    """``linear(a ⊙ x + b)`` as one Linear: ``W' = W diag(a)``, ``b' = W b + bias`` (bias created if absent)."""
    w = linear.weight
    out = nn.Linear(linear.in_features, linear.out_features, bias=True, device=w.device, dtype=w.dtype)
    out.weight.copy_(w * a.to(w.dtype))
    bias = w.float() @ b.float()
    if linear.bias is not None:
        bias = bias + linear.bias.float()
    out.bias.copy_(bias.to(w.dtype))
    return out


@torch.no_grad()
def fold_affine_after_conv(conv: nn.Conv2d, a: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    """``a ⊙ conv(x) + b`` (per output channel) folded into ``conv`` in place.

    With RepBN after a patch-embedding conv this gives the bias ``γ(b_conv − μ)/√(σ²+ε) + β + α·b_conv``;
    the official ``PatchEmbed.merge_bn`` drops the ``α·b_conv`` term.
    """
    w = conv.weight
    conv.weight.copy_(w * a.to(w.dtype).view(-1, *([1] * (w.dim() - 1))))
    old = conv.bias if conv.bias is not None else torch.zeros_like(a)
    new_bias = (a * old + b).to(w.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)
    return conv


@torch.no_grad()
def fold_affine_before_conv(a: torch.Tensor, b: torch.Tensor, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(a ⊙ x + b)`` (per input channel) folded into an un-padded, ungrouped ``conv`` in place."""
    if conv.groups != 1 or any(p != 0 for p in conv.padding):
        raise ValueError("fold_affine_before_conv needs an ungrouped conv without padding")
    w = conv.weight
    shift = (w.float().sum(dim=(2, 3)) @ b.float()).to(w.dtype)
    conv.weight.copy_(w * a.to(w.dtype).view(1, -1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift)
    else:
        conv.bias.add_(shift)
    return conv


def set_prepbn_step(module: nn.Module, step: int) -> int:
    """Drive every :class:`LinearNorm` in ``module`` to global step ``step``; returns how many were set."""
    count = 0
    for m in module.modules():
        if isinstance(m, LinearNorm):
            m.set_step(int(step))
            count += 1
    return count
