"""The Squeeze-and-Excitation block: squeeze, excitation, gate and scale.

Hu, Shen, Albanie, Sun, Wu: *Squeeze-and-Excitation Networks*, arXiv:1709.01507.

On a feature map ``U`` of ``C`` channels the block computes

- squeeze: ``z_c = mean_{h,w} u_c`` (the paper also ablates ``max``);
- excitation: ``s = gate(W2 · δ(W1 · z))`` with ``W1 ∈ R^{C/r × C}``, ``W2 ∈ R^{C × C/r}``,
  ``δ = ReLU`` and ``gate = sigmoid`` (σ in the paper), ``hardsigmoid``, or the paper's
  ablations ``tanh`` and ``relu`` (Table 12);
- scale: ``x̃_c = s_c · u_c``.

Squeeze ``none`` is the paper's *NoSqueeze* (Section 7.1, Table 16): no pooling, the same two
1×1 convolutions applied at every position of the full map, so ``s`` is ``[N, C, H, W]``, a
scale per pixel and channel, and the excitation costs ``H·W`` times as much. Every forward
that scales a map (:class:`ChannelScale`, the fused residual joins) broadcasts ``s``, so it
takes either shape.

``W1`` and ``W2`` are 1×1 convolutions with biases (as in the paper's released models and
timm), so an SE block on ``C`` channels with ratio ``r`` has ``2·C·(C // r) + C // r + C``
parameters. The squeeze width is ``C // r`` (floor), which must be at least 1, so ``r ≤ C``;
every width in the torchvision ResNets is a multiple of 64, so for ``r ≤ 64`` there is no
rounding at all and the paper's exact counts hold.

The squeeze, the gate and the scale are leaf modules of their own (:class:`Squeeze`, the
classes in :data:`GATES`, :class:`ChannelScale`) so that the cost model can charge for them;
profilers charge nothing for a bare ``x * s``. Where a block sits in a network is
:mod:`se_search.models.variants`'s business.

Blocks that start as the identity (the ``finetune`` strategy). A pretrained backbone keeps
its function when SE blocks are added only if each new block starts as ``x ↦ x``. With
``W2`` and its bias zero the gate's input is 0 everywhere, and ``sigmoid(0) =
hardsigmoid(0) = 1/2``, so such blocks are built with ``gain = 2`` (:data:`IDENTITY_GAIN`):
``s = 2 · gate(...)``, the same shape with range (0, 2) and exactly 1 at 0, and
:meth:`SqueezeExcite.start_as_identity` zeroes ``W2``. ``tanh(0) = relu(0) = 0``: no gain
makes those blocks the identity at a zero excitation (they would zero the map), so they
cannot start that way (:func:`can_start_as_identity`; a space refuses them under
``finetune``). The gain is a 0-d buffer, ``gain``, present only when it is not 1: the
paper's blocks (the ``train`` strategy) keep their ``state_dict`` keys and every block its
parameter count, while a fine-tuned block's gain is saved with its weights and comes back
with them. Loading a ``state_dict`` sets each block's
gain from it (``<prefix>gain`` there, or 1 where the block's weights come without one), so a
model rebuilt from its architecture alone, as :func:`~se_search.outputs.export.load_model` and a
study's checkpoints rebuild it, computes what was trained. The extra ``C`` multiplies of a
gain are not charged by the cost model (about a millionth of a ResNet's FLOPs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "IDENTITY_GAIN",
    "SQUEEZES",
    "ChannelScale",
    "PointwiseConv",
    "ReLUGate",
    "Squeeze",
    "SqueezeExcite",
    "SqueezeOp",
    "can_start_as_identity",
    "pointwise",
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
    """The squeeze step, one of :data:`SQUEEZES`: global pooling of each channel to one value
    (``avg``, the paper's, or ``max``), or ``none`` (NoSqueeze), which passes the map on."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in SQUEEZES:
            raise ValueError(f"unknown squeeze {mode!r}; choose one of {sorted(SQUEEZES)}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SQUEEZES[self.mode].fn(x)

    def extra_repr(self) -> str:
        return self.mode


class ChannelScale(nn.Module):
    """The scale step ``x̃_c = s_c · u_c``, a module so that cost models can count it.

    ``scale`` broadcasts: ``[N, C, 1, 1]`` after a pooling squeeze, ``[N, C, H, W]`` after
    NoSqueeze; either way an output element reads only its own position of each input (and
    its channel's or its own scale), so the in-place write below stays exact.

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
    """The excitation's 1×1 convolution (``fc1``, ``fc2``), run by :func:`pointwise`: on the
    squeezed ``[N, C, 1, 1]`` map as a matrix product, the same function at several times less
    than oneDNN's convolution (2.2 against 11.7 ms for the 32 of SE-ResNet-50 at batch 8 on
    a 2-core CPU); with ``per_pixel`` (NoSqueeze's full map) as the convolution.
    Its parameters are a ``Conv2d``'s, so ``state_dict`` keys and shapes are unchanged."""

    #: Whether it runs on a full map; :meth:`SqueezeExcite.set_squeeze` sets it from the
    #: squeeze, which knows before any forward (a branch on the map's size would make
    #: ``torch.jit.trace`` warn at every block).
    per_pixel: bool = False
    #: Always there (``bias=True``), where a ``Conv2d``'s may be None.
    bias: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias, per_pixel=self.per_pixel)


def pointwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, per_pixel: bool = False
) -> torch.Tensor:
    """A 1×1 convolution of ``x [N, C, H, W]`` by ``weight [O, C, 1, 1]``; ``[N, O, H, W]``.

    A squeezed map ``[N, C, 1, 1]`` runs as a matrix product, exported to ONNX as one ``Gemm``
    between reshapes (a channels-last ``movedim`` would add transposes); a map with more than
    one position is refused there by the product's shape check (``C·H·W`` columns against
    ``C``). ``per_pixel`` (NoSqueeze) runs the convolution itself on a map of any size.
    """
    if per_pixel:
        return F.conv2d(x, weight, bias)
    return F.linear(x.flatten(1), weight.flatten(1), bias)[:, :, None, None]


@dataclass(frozen=True)
class SqueezeOp:
    """One squeeze: its function, and whether it pools each channel to one value (then the
    excitation runs once per channel) or keeps the map (NoSqueeze: once per position)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    pools: bool


SQUEEZES: dict[str, SqueezeOp] = {
    "avg": SqueezeOp(lambda x: x.mean(dim=(2, 3), keepdim=True), pools=True),
    "max": SqueezeOp(lambda x: x.amax(dim=(2, 3), keepdim=True), pools=True),
    "none": SqueezeOp(lambda x: x, pools=False),
}


class ReLUGate(nn.ReLU):
    """ReLU as the gate (the paper's Table 12 ablation), a class of its own: the cost model
    charges a gate one operation per element, and a rule for ``nn.ReLU`` itself would charge
    every ReLU of the backbone too (thop matches exact types and counts those as free)."""


GATES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "relu": ReLUGate,
}
#: The excitation's hidden activation δ: ReLU in the paper; EfficientNet's own blocks use SiLU.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}
#: The gain that makes a block with a zero excitation the identity: sigmoid and hardsigmoid
#: are 1/2 at 0 (tanh and relu are 0 there: :func:`can_start_as_identity`).
IDENTITY_GAIN = 2.0


def can_start_as_identity(gate: str) -> bool:
    """Whether a block with ``gate`` can start as the identity: ``IDENTITY_GAIN · gate(0) = 1``
    (sigmoid, hardsigmoid); not tanh or relu, which are 0 at 0."""
    return IDENTITY_GAIN * float(GATES[gate]()(torch.zeros(()))) == 1.0


class SqueezeExcite(nn.Module):
    """An SE block on ``channels`` channels.

    Args:
        channels: channels of the feature map it recalibrates (``C``).
        reduction: the ratio ``r``; the excitation MLP is ``C -> C // r -> C``.
        squeeze: ``avg`` or ``max`` global pooling, or ``none`` (NoSqueeze: per pixel).
        gate: ``sigmoid`` (σ in the paper), ``hardsigmoid``, ``tanh`` or ``relu``.
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
        self.set_squeeze(squeeze)
        self._set_gain(float(gain))

    @property
    def gain(self) -> float:
        """The factor on the gate's output: 1 unless the block was built or loaded with
        another."""
        buffer = self._buffers.get("gain")
        return 1.0 if buffer is None else float(buffer)

    def set_squeeze(self, mode: str) -> None:
        """Squeeze by ``mode`` from now on: the excitation's convs run once on the pooled map,
        or at every position when the squeeze pools nothing (NoSqueeze)."""
        self.squeeze = Squeeze(mode)
        self.fc1.per_pixel = self.fc2.per_pixel = not SQUEEZES[mode].pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.excite(x))

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights ``s`` of ``x``, ``[N, C, 1, 1]`` (``[N, C, H, W]`` under
        NoSqueeze): squeeze, excitation, gate and gain, everything but the scale step (which
        a residual block may fuse with its add)."""
        s = self.gate(self.fc2(self.act(self.fc1(self.squeeze(x)))))
        gain = self._buffers.get("gain")
        return s if gain is None else s * gain

    def start_as_identity(self) -> None:
        """Zero ``W2`` and its bias, so that the block returns its input unchanged.

        The gate then sees 0 everywhere and the block scales by ``gain · gate(0)``, which must
        be 1: true for sigmoid and hardsigmoid with :data:`IDENTITY_GAIN`, refused otherwise.
        """
        at_zero = float(self.gate(torch.zeros(())))
        if at_zero == 0.0:
            identity = [g for g in GATES if can_start_as_identity(g)]
            raise ValueError(
                f"a block with gate {type(self.gate).__name__} cannot start as the identity: "
                f"the gate is 0 at a zero excitation, so the block would zero the map whatever "
                f"its gain; use gate {' or '.join(identity)} for a block that starts as the "
                "identity"
            )
        if self.gain * at_zero != 1.0:
            raise ValueError(
                f"a block with gate {type(self.gate).__name__} and gain {self.gain:g} scales "
                f"by {self.gain * at_zero:g} at a zero excitation, not 1; build it with "
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
