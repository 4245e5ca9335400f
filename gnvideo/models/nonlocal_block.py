"""The non-local block of Wang et al. (CVPR 2018) for (N, C, T, H, W) feature maps, with any norm of the registry.

As the Non-local code has it (facebookresearch/video-nonlocal-net ``lib/models/nonlocal_helper.py``; PySlowFast and
pytorchvideo do the same)::

    theta = conv_theta(x)                       (N, C/2, T, H, W): the queries, one per position (L = T*H*W)
    x_p   = pool(x)                             max-pool, kernel = stride = ``pool`` (default (1, 2, 2))
    phi, g = conv_phi(x_p), conv_g(x_p)         (N, C/2, T', H', W'): keys and values (S = T'*H'*W' positions)
    f     = softmax(theta^T phi * (C/2)^-1/2)   "embedded_gaussian" (rows sum to 1), or theta^T phi / S "dot_product"
    y     = g f^T                               (N, C/2, L): each position a weighted sum of the values
    out   = x + norm(conv_out(y))               conv_out back to C channels; the norm's scale starts at 0

The 1x1x1 convs have biases; at initialization their weights are drawn from N(0, 0.01^2), biases and the norm's
scale and shift are 0 (``reset_parameters``), so a fresh block is the identity and a model with fresh blocks computes
what the model without them computes.

``implementation="efficient"`` (default) never forms the L x S matrix where the math allows: the embedded Gaussian is
scaled dot-product attention with query theta, key phi, value g and scale (C/2)^-1/2, computed by
``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel where the backend has one); the dot product is
linear in f, so ``g (theta^T phi / S)^T = (g phi^T) theta / S`` needs only a (C/2) x (C/2) matrix. ``"explicit"`` forms
the matrix as the Non-local code does; it is the reference the efficient forms are tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gnvideo.models.norms import build_norm

INSTANTIATIONS = ("embedded_gaussian", "dot_product")
IMPLEMENTATIONS = ("efficient", "explicit")
#: Std of the normal init of the block's conv weights (the Non-local code's ``NONLOCAL.CONV_INIT_STD``).
CONV_INIT_STD = 0.01


def _pool_size(pool: Sequence[int] | None) -> tuple[int, int, int] | None:
    if pool is None:
        return None
    size = tuple(int(v) for v in pool)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"non-local pool must be None or 3 ints (T, H, W) >= 1, got {pool}")
    return None if size == (1, 1, 1) else size


class NonLocal3d(nn.Module):
    """Non-local block (module docstring): (N, C, T, H, W) -> (N, C, T, H, W), residual included.

    Args:
        channels: C of the input and output.
        inner_channels: width of theta, phi and g (default C // 2, as the paper).
        instantiation: "embedded_gaussian" (softmax of theta^T phi scaled by inner_channels^-1/2) or "dot_product"
            (theta^T phi divided by the number S of key positions).
        pool: max-pool kernel = stride (T, H, W) on the input of phi and g; None or (1, 1, 1) for none.
        norm: norm kind of the layer after ``conv_out`` (``gnvideo.models.norms.NORM_KINDS``); the backbone's.
        norm_options: its options (``build_norm``).
        implementation: "efficient" or "explicit" (module docstring); the same function either way.

    Submodules (named as pytorchvideo's ``NonLocal``): ``conv_theta``, ``conv_phi``, ``conv_g``, ``conv_out``,
    ``pool``, ``norm``.
    """

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        instantiation: str = "embedded_gaussian",
        pool: Sequence[int] | None = (1, 2, 2),
        norm: str = "bn",
        norm_options: dict[str, Any] | None = None,
        implementation: str = "efficient",
    ):
        super().__init__()
        if instantiation not in INSTANTIATIONS:
            raise ValueError(f"non-local instantiation must be one of {INSTANTIATIONS}, got {instantiation!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"non-local implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        inner = channels // 2 if inner_channels is None else int(inner_channels)
        if channels < 1 or inner < 1:
            raise ValueError(f"non-local block needs channels >= 2 and inner_channels >= 1, got {channels}, {inner}")
        self.channels, self.inner_channels = channels, inner
        self.instantiation, self.implementation = instantiation, implementation
        self.pool_size = _pool_size(pool)
        self.conv_theta = nn.Conv3d(channels, inner, kernel_size=1)
        self.conv_phi = nn.Conv3d(channels, inner, kernel_size=1)
        self.conv_g = nn.Conv3d(channels, inner, kernel_size=1)
        self.conv_out = nn.Conv3d(inner, channels, kernel_size=1)
        self.pool = nn.Identity() if self.pool_size is None else nn.MaxPool3d(self.pool_size, stride=self.pool_size)
        self.norm = build_norm(norm, channels, **dict(norm_options or {}))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The Non-local code's initialization: conv weights ~ N(0, 0.01^2), conv biases 0, norm scale and shift 0."""
        with torch.no_grad():
            for conv in (self.conv_theta, self.conv_phi, self.conv_g, self.conv_out):
                nn.init.normal_(conv.weight, std=CONV_INIT_STD)
                nn.init.zeros_(conv.bias)
            self.norm.weight.zero_()  # a parameter, or a buffer for frozen_bn
            self.norm.bias.zero_()

    def attend(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Queries (N, Ci, T, H, W), keys and values (N, Ci, T', H', W') -> (N, Ci, T, H, W): each query position's
        weighted sum of the values."""
        n, ci, t, h, w = theta.shape
        if self.implementation == "explicit":
            return self.attend_explicit(theta.flatten(2), phi.flatten(2), g.flatten(2)).reshape(n, ci, t, h, w)
        if self.instantiation == "dot_product":  # linear in f: contract phi with g first, a Ci x Ci matrix
            phi, g = phi.flatten(2), g.flatten(2)
            return torch.bmm(torch.bmm(g, phi.transpose(1, 2)) / phi.shape[2], theta.flatten(2)).reshape(n, ci, t, h, w)
        # (N, 1 head, positions, Ci) with unit stride along Ci, which fused kernels need (no copy for channels_last)
        q, k, v = (u.permute(0, 2, 3, 4, 1).reshape(n, 1, -1, ci).contiguous() for u in (theta, phi, g))
        y = F.scaled_dot_product_attention(q, k, v, scale=self.inner_channels ** -0.5)
        return y.reshape(n, t, h, w, ci).permute(0, 4, 1, 2, 3)

    def attend_explicit(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(N, Ci, L) queries, (N, Ci, S) keys and values -> (N, Ci, L), forming the (N, L, S) affinity matrix (the
        Non-local code's computation)."""
        affinity = torch.einsum("ncl,ncs->nls", theta, phi)
        if self.instantiation == "embedded_gaussian":
            affinity = torch.softmax(affinity * self.inner_channels ** -0.5, dim=2)
        else:
            affinity = affinity / affinity.shape[2]
        return torch.einsum("nls,ncs->ncl", affinity, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> x + norm(conv_out(y)), same shape and memory format."""
        pooled = self.pool(x)
        y = self.attend(self.conv_theta(x), self.conv_phi(pooled), self.conv_g(pooled))
        # y may be a channels_last view of the attention output: conv_out reads it as it is (a copy would be kept for
        # backward beside the attention's saved output); the sum takes x's memory format, x being its first operand
        return x + self.norm(self.conv_out(y))

    def extra_repr(self) -> str:
        return (f"instantiation={self.instantiation!r}, pool={self.pool_size}, "
                f"implementation={self.implementation!r}")


def fresh_nonlocal_blocks(model: nn.Module, left: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split the state-dict names a weight load ``left`` as initialized into whole non-local blocks and the rest.

    Args:
        model: the model loaded into.
        left: its state-dict names that the load did not fill (BN step counters ``num_batches_tracked`` need not be
            among them).

    Returns:
        ``(blocks, rest)``: the names of the non-local blocks none of whose tensors were loaded (each still the
        identity, as initialized), and the names in ``left`` outside those blocks, in their order.
    """
    left = list(left)
    unfilled = set(left)
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, NonLocal3d):
            keys = [f"{name}.{k}" for k in module.state_dict() if not k.endswith("num_batches_tracked")]
            if all(k in unfilled for k in keys):
                blocks.append(name)
    inside = tuple(f"{b}." for b in blocks)
    return blocks, [k for k in left if not k.startswith(inside)]


__all__ = ["CONV_INIT_STD", "IMPLEMENTATIONS", "INSTANTIATIONS", "NonLocal3d", "fresh_nonlocal_blocks"]
