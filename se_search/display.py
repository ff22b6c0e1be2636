"""How figures are written wherever se-search shows them (the terminal, the dashboard's
note, the report): rounded as the front table rounds them, and with their noise.

An accuracy is ``mean ± standard error``; ``≈`` marks a front member whose accuracy is
within noise of a cheaper member's; ``!`` marks a latency that stayed disturbed when it was
measured again.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DISTURBED_MARK",
    "TIE_MARK",
    "accuracy_cell",
    "fmt",
    "latency_cell",
    "noise_line",
    "rounded",
]

TIE_MARK = "≈"
DISTURBED_MARK = "!"

#: The format of each figure a record may hold, as every table rounds it.
ROUNDING: dict[str, tuple[float, str]] = {
    "accuracy": (1, ".4f"),
    "accuracy_se": (1, ".4f"),
    "noise_sigma": (1, ".4f"),
    "params": (1e-6, ".3f"),  # M
    "flops": (1e-9, ".4f"),  # G multiply-adds
    "latency_ms": (1, ".3f"),
    "latency_iqr_ms": (1, ".3f"),
    "train_seconds": (1, ".1f"),
    "seconds": (1, ".1f"),
}


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``-`` when it is missing."""
    return "-" if value is None else format(value, spec)


def rounded(key: str, value: Any) -> str:
    """A record's figure as the tables show it (``params`` in M, ``flops`` in G)."""
    if key not in ROUNDING or not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    scale, spec = ROUNDING[key]
    unit = {"params": " M", "flops": " G"}.get(key, "")
    return f"{value * scale:{spec}}{unit}"


def accuracy_cell(row: dict[str, Any]) -> str:
    """``0.9250 ± 0.0120`` (the standard error where it is known), ``≈`` when the member is
    within noise of a cheaper one."""
    text = fmt(row.get("accuracy"), ".4f")
    if row.get("accuracy_se") is not None and row.get("accuracy") is not None:
        text += f" ± {row['accuracy_se']:.4f}"
    if row.get("within_noise_of") is not None:
        text += f" {TIE_MARK}"
    return text


def latency_cell(row: dict[str, Any]) -> str:
    """The latency in ms, ``!`` when its measurement stayed disturbed."""
    text = fmt(row.get("latency_ms"), ".3f")
    if (row.get("latency") or {}).get("disturbed"):
        text += f" {DISTURBED_MARK}"
    return text


def noise_line(noise: dict[str, Any] | None) -> str:
    """One sentence about a run's accuracy noise, for under a front."""
    if not noise or noise.get("sigma") is None:
        return (
            "accuracy noise: not measured (evaluation.noise_seeds: 0 and one seed per "
            "candidate); differences between members may be noise"
        )
    refs = (noise.get("details") or {}).get("references", {})
    pooled = ", ".join(f"{name} x{len(r['seeds'])}" for name, r in refs.items()) or "seeds"
    return (
        f"accuracy noise σ = {noise['sigma']:.4f} (pooled over {noise['candidates']} "
        f"candidates' seeds: {pooled}; {noise['dof']} degrees of freedom); ± is the standard "
        f"error of each mean; {TIE_MARK}: within noise (2 standard errors) of a cheaper member"
    )
