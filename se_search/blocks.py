"""The Squeeze-and-Excitation block and the ways it is integrated into a residual block.

Hu, Shen, Albanie, Sun, Wu: *Squeeze-and-Excitation Networks*, arXiv:1709.01507.

On a feature map ``U`` of ``C`` channels the block computes

- squeeze: ``z_c = mean_{h,w} u_c`` (the paper also ablates ``max``);
- excitation: ``s = gate(W2 · δ(W1 · z))`` with ``W1 ∈ R^{C/r × C}``, ``W2 ∈ R^{C × C/r}``,
  ``δ = ReLU`` and ``gate = sigmoid`` (σ in the paper) or ``hardsigmoid``;
- scale: ``x̃_c = s_c · u_c``.

``W1`` and ``W2`` are 1×1 convolutions with biases (as in the paper's released models and
timm), so an SE block on ``C`` channels with ratio ``r`` has ``2·C·(C // r) + C // r + C``
parameters. The squeeze width is ``C // r`` (floor), which must be at least 1, so ``r ≤ C``;
every width in the torchvision ResNets is a multiple of 64, so for ``r ≤ 64`` there is no
rounding at all and the paper's exact counts hold.

The squeeze, the gate and the scale are leaf modules of their own (:class:`Squeeze`,
``nn.Sigmoid``/``nn.Hardsigmoid``, :class:`ChannelScale`) so that the cost model can charge
for them; profilers charge nothing for a bare ``x * s``.

Integration variants (paper Fig. 5, Table 14) on a residual block
``y = act(branch(x) + shortcut(x))``:

========== ===================================================== ============
variant    where the SE block sits                               sees
========== ===================================================== ============
standard   on the branch output, before the addition             out channels
pre        on the branch input, before its first conv            in channels
post       after the addition and its activation                 out channels
identity   on the shortcut path, in parallel to the branch       out channels
none       no block                                              --
========== ===================================================== ============

Two more serve other families. ``inner``: inside a mobile block, after its depthwise
convolution, on the expanded channels (MnasNet, MobileNetV3). ``keep``: the backbone's own
SE block as it is (MobileNetV3, EfficientNet, RegNetY). At a site without a shortcut (a
VGG conv, an Inception module) ``standard`` is the block on the site's output, and the
residual variants do not apply: each backbone's sites say which variants they take.

Blocks that start as the identity (the ``finetune`` strategy). A pretrained backbone keeps
its function when SE blocks are added only if each new block starts as ``x ↦ x``. With
``W2`` and its bias zero the gate's input is 0 everywhere, and ``sigmoid(0) =
hardsigmoid(0) = 1/2``, so such blocks are built with ``gain = 2`` (:data:`IDENTITY_GAIN`):
``s = 2 · gate(...)``, the same shape with range (0, 2) and exactly 1 at 0, and
:meth:`SqueezeExcite.start_as_identity` zeroes ``W2``. The gain is a 0-d buffer, ``gain``,
present only when it is not 1: the paper's blocks (the ``train`` strategy) keep their
``state_dict`` keys and every block its parameter count, while a fine-tuned block's gain is
saved with its weights and comes back with them. Loading a ``state_dict`` sets each block's
gain from it (``<prefix>gain`` there, or 1 where the block's weights come without one), so a
model rebuilt from its architecture alone, as :func:`~se_search.export.load_model` and a
study's checkpoints rebuild it, computes what was trained. The extra ``C`` multiplies of a
gain are not charged by the cost model (about a millionth of a ResNet's FLOPs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "IDENTITY_GAIN",
    "SQUEEZES",
    "VARIANTS",
    "ChannelScale",
    "PointwiseConv",
    "ResidualParts",
    "ResidualSE",
    "Squeeze",
    "SqueezeExcite",
    "Variant",
    "pointwise",
    "set_fused",
    "squeeze_width",
]


def squeeze_width(channels: int, reduction: int) -> int:
    """Hidden width of the excitation MLP: ``channels // reduction``, at least 1.

    Raises ``ValueError`` when ``reduction`` is not a positive integer or exceeds ``channels``.
    """
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
    if reduction > channels:
        raise ValueError(
            f"reduction {reduction} exceeds the {channels} channels it squeezes; "
            f"use a reduction of at most {channels}"
        )
    return channels // reduction


class Squeeze(nn.Module):
    """Global pooling of each channel to one value: ``avg`` (the paper's) or ``max``."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in SQUEEZES:
            raise ValueError(f"unknown squeeze {mode!r}; choose one of {sorted(SQUEEZES)}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SQUEEZES[self.mode](x)

    def extra_repr(self) -> str:
        return self.mode


class ChannelScale(nn.Module):
    """The scale step ``x̃_c = s_c · u_c``, a module so that cost models can count it.

    ``add`` fuses a residual addition into the same pass, ``x * scale + add`` (one read of
    each map instead of a product map written and read again). ``out`` is a fresh tensor of
    the caller's, the same shape as the result, that may hold it: it is written in place
    when autograd needs none of the inputs (inference, ``no_grad``), which spares the
    allocation of a whole feature map; under autograd the result is always a new tensor.
    """

    def forward(
        self,
        x: torch.Tensor,
        scale: torch.Tensor,
        add: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if out is not None and _needs_grad(x, scale, add):
            out = None
        if add is None:
            return torch.mul(x, scale, out=out)
        return torch.addcmul(add, x, scale, out=out)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class PointwiseConv(nn.Conv2d):
    """The excitation's 1×1 convolution (``fc1``, ``fc2``) on the squeezed ``[N, C, 1, 1]``
    map, run as a matrix product (:func:`pointwise`): the same function at several times less
    than oneDNN's convolution (2.2 against 11.7 ms for the 32 of SE-ResNet-50 at batch 8 on
    a 2-core CPU).
    Its parameters are a ``Conv2d``'s, so ``state_dict`` keys and shapes are unchanged."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1×1 convolution of a squeezed map ``x [N, C, 1, 1]`` by ``weight [O, C, 1, 1]`` as a
    matrix product; the result is ``[N, O, 1, 1]``. A map with more than one position is
    refused by the product's shape check (``C·H·W`` columns against ``C``). Exported to ONNX
    it is one ``Gemm`` between reshapes (a channels-last ``movedim`` would add transposes)."""
    return F.linear(x.flatten(1), weight.flatten(1), bias)[:, :, None, None]


SQUEEZES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "avg": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "max": lambda x: x.amax(dim=(2, 3), keepdim=True),
}
GATES: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}
#: The excitation's hidden activation δ: ReLU in the paper; EfficientNet's own blocks use SiLU.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}
#: The gain that makes a block with a zero excitation the identity: every gate is 1/2 at 0.
IDENTITY_GAIN = 2.0


class SqueezeExcite(nn.Module):
    """An SE block on ``channels`` channels.

    Args:
        channels: channels of the feature map it recalibrates (``C``).
        reduction: the ratio ``r``; the excitation MLP is ``C -> C // r -> C``.
        squeeze: ``avg`` or ``max`` global pooling.
        gate: ``sigmoid`` (σ in the paper) or ``hardsigmoid``.
        act: the hidden activation δ, ``relu`` (the paper's) or ``silu``.
        gain: a factor on the gate's output; 1 is the paper's block, :data:`IDENTITY_GAIN`
            one that :meth:`start_as_identity` can make the identity (any other gain is a
            ``gain`` buffer in the ``state_dict``: see the module docstring).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        act: str = "relu",
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; choose one of {sorted(GATES)}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
        if isinstance(gain, bool) or not isinstance(gain, int | float) or not 0 < gain < math.inf:
            raise ValueError(
                f"gain must be a positive finite number, got {gain!r}; 1 is the paper's block, "
                f"{IDENTITY_GAIN} one that can start as the identity"
            )
        hidden = squeeze_width(channels, reduction)
        self.channels, self.reduction = channels, reduction
        self.squeeze = Squeeze(squeeze)
        self.fc1 = PointwiseConv(channels, hidden)  # W1
        self.act = ACTIVATIONS[act](inplace=True)  # δ
        self.fc2 = PointwiseConv(hidden, channels)  # W2
        self.gate = GATES[gate]()  # σ
        self.scale = ChannelScale()
        self._set_gain(float(gain))

    @property
    def gain(self) -> float:
        """The factor on the gate's output: 1 unless the block was built or loaded with
        another."""
        buffer = self._buffers.get("gain")
        return 1.0 if buffer is None else float(buffer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excite(x))

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights ``s`` of ``x``, ``[N, C, 1, 1]``: squeeze, excitation, gate and
        gain, everything but the scale step (which a residual block may fuse with its add)."""
        s = self.gate(self.fc2(self.act(self.fc1(self.squeeze(x)))))
        gain = self._buffers.get("gain")
        return s if gain is None else s * gain

    def start_as_identity(self) -> None:
        """Zero ``W2`` and its bias, so that the block returns its input unchanged.

        The gate then sees 0 everywhere and the block scales by ``gain · gate(0)``, which must
        be 1: true for both gates with :data:`IDENTITY_GAIN`, refused otherwise.
        """
        at_zero = self.gain * float(self.gate(torch.zeros(())))
        if at_zero != 1.0:
            raise ValueError(
                f"a block with gate {type(self.gate).__name__} and gain {self.gain:g} scales "
                f"by {at_zero:g} at a zero excitation, not 1; build it with "
                f"gain={IDENTITY_GAIN}"
            )
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()

    def extra_repr(self) -> str:
        return "" if self.gain == 1.0 else f"gain={self.gain:g}"

    def _set_gain(self, gain: float) -> None:
        # The buffer exists only for a gain other than 1, so the paper's block keeps its
        # state_dict keys. It goes straight into ``_buffers``: register_buffer refuses a name
        # that the ``gain`` property already holds.
        if gain == 1.0:
            self._buffers.pop("gain", None)
            return
        ref = self.fc2.weight
        self._buffers["gain"] = torch.full((), gain, dtype=ref.dtype, device=ref.device)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The gain comes with the weights: a buffer to load into where the state has one (the
        # default loader copies its value in), none where the block's weights come without
        # one. A state that holds nothing of this block leaves its gain alone.
        if prefix + "gain" in state_dict:
            if "gain" not in self._buffers:
                self._set_gain(math.nan)  # a placeholder the loader overwrites
        elif prefix + "fc2.weight" in state_dict:
            self._set_gain(1.0)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# --------------------------------------------------------------------------- residual blocks


@dataclass(frozen=True)
class ResidualParts:
    """How one residual block class splits into ``act(branch(x) + shortcut(x))``.

    Each function takes the :class:`ResidualSE` (which holds the original block's children
    under their original names) and a tensor. Backbone adapters register one per block class.
    ``join`` returns a tensor of its own (never one of its inputs), which the ``post`` variant
    may scale in place.

    ``scaled_join(m, a, s, b, into)``, optional, is ``join(a * s, b)`` with the scale fused
    into the addition: :class:`ChannelScale` with ``add=b, out=into`` where ``into`` is the
    fresh one of ``a`` and ``b``. Where it is given, the ``standard`` and ``identity`` variants
    cost no extra pass over the feature map for their scale.
    """

    branch: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    shortcut: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    join: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    scaled_join: (
        Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
        | None
    ) = None


def _standard(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, m.se(p.branch(m, x)), p.shortcut(m, x))


def _pre(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, p.branch(m, m.se(x)), p.shortcut(m, x))


def _post(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return m.se(p.join(m, p.branch(m, x), p.shortcut(m, x)))


def _identity(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, p.branch(m, x), m.se(p.shortcut(m, x)))


# The fused forwards compute what the ones above do (to float rounding: tests hold them within
# 1e-5) with fewer passes over the feature maps: the scale shares its pass with the residual
# addition, or is written in place where autograd allows (see ChannelScale).


def _standard_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    if p.scaled_join is None:
        return _standard(m, x)
    out = p.branch(m, x)
    return p.scaled_join(m, out, m.se.excite(out), p.shortcut(m, x), out)


def _identity_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    if p.scaled_join is None:
        return _identity(m, x)
    out, shortcut = p.branch(m, x), p.shortcut(m, x)
    return p.scaled_join(m, shortcut, m.se.excite(shortcut), out, out)


def _post_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    out = p.join(m, p.branch(m, x), p.shortcut(m, x))
    return m.se.scale(out, m.se.excite(out), out=out)


@dataclass(frozen=True)
class Variant:
    """One integration variant: which width its SE block sees and how the block runs."""

    name: str
    code: str  # one letter for compact placement strings
    description: str
    sees: Literal["in", "out"] | None  # the side whose map it scales; None: adds no block
    residual_forward: Callable[[ResidualSE, torch.Tensor], torch.Tensor] | None
    paper_top1_err: float | None  # SE-ResNet-50, paper Table 14
    fused_forward: Callable[[ResidualSE, torch.Tensor], torch.Tensor] | None = None

    @property
    def adds_block(self) -> bool:
        """Whether the variant puts a new SE block at its site (and so needs a ratio)."""
        return self.sees is not None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("none", "-", "no SE block", None, None, 23.30),
        Variant(
            "standard",
            "S",
            "on the branch, before the addition",
            "out",
            _standard,
            22.28,
            _standard_fused,
        ),
        Variant("pre", "P", "on the branch input, before its first conv", "in", _pre, 22.23),
        Variant(
            "post", "O", "after the addition and its activation", "out", _post, 22.78, _post_fused
        ),
        Variant(
            "identity",
            "I",
            "on the shortcut, parallel to the branch",
            "out",
            _identity,
            22.20,
            _identity_fused,
        ),
        Variant("inner", "M", "inside the block, after its depthwise conv", "out", None, None),
        Variant("keep", "K", "the backbone's own SE block, unchanged", None, None, None),
    )
}


class ResidualSE(nn.Module):
    """A residual block with an SE block placed by ``variant``.

    It adopts the original block's children under their original names, so every key of the
    original block's ``state_dict`` is unchanged (backbone weights load) and the SE block's
    parameters are added under ``se.``.

    ``fused`` (default ``True``) runs the variant's fused forward where it has one: the same
    function with fewer passes over the feature maps. ``False`` runs the reference forward,
    the paper's block step by step; set it when ``se`` is not a :class:`SqueezeExcite`.
    """

    fused: bool = True

    def __init__(
        self, block: nn.Module, se: SqueezeExcite, *, variant: str, parts: ResidualParts
    ) -> None:
        super().__init__()
        forward = VARIANTS[variant].residual_forward
        if forward is None:
            raise ValueError(f"variant {variant!r} is not one of a residual block's placements")
        for name, child in block.named_children():
            self.add_module(name, child)
        for name, value in vars(block).items():  # plain attributes such as ``stride``
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        self.se = se
        self.variant = variant
        self.parts = parts
        self.block_type = type(block).__name__
        self._forward = forward
        self._fused_forward = VARIANTS[variant].fused_forward or forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._fused_forward if self.fused else self._forward)(self, x)

    def extra_repr(self) -> str:
        return f"{self.block_type}, variant={self.variant}"


def set_fused(model: nn.Module, fused: bool) -> int:
    """Switch every :class:`ResidualSE` in ``model`` to its fused (``True``) or reference
    forward; returns how many blocks there are."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualSE)]
    for block in blocks:
        block.fused = fused
    return len(blocks)
