"""MLP built from layer sizes; architecture spec <-> module."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import nn

Activation = Literal["relu", "sigmoid", "tanh"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
assert set(ACTIVATIONS) == set(get_args(Activation))


def check_sizes(sizes: list[int] | tuple[int, ...]) -> list[int]:
    """Validate layer sizes [n_in, h_1, ..., h_k, n_out]: at least two, all integers >= 1."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"layer sizes must be integers >= 1, got {sizes}")
    return sizes


def check_activation(activation: str) -> str:
    """Validate an activation name against ACTIVATIONS."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return activation


class MLP(nn.Sequential):
    """Linear, act, Linear, act, ..., Linear: a plain stack (state_dict keys '0.weight', ...)."""

    def __init__(self, sizes: list[int], activation: Activation = "relu"):
        sizes = check_sizes(sizes)
        act = ACTIVATIONS[check_activation(activation)]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:  # no activation after the output layer: logits
                layers.append(act())
        super().__init__(*layers)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))

    @property
    def linears(self) -> list[nn.Linear]:
        """The Linear layers in order."""
        return [m for m in self if isinstance(m, nn.Linear)]

    @property
    def sizes(self) -> list[int]:
        """[n_in, h_1, ..., h_k, n_out] read off the current Linear layers."""
        linears = self.linears
        return [linears[0].in_features] + [lin.out_features for lin in linears]

    @property
    def hidden(self) -> list[int]:
        """Hidden layer widths [h_1, ..., h_k]."""
        return self.sizes[1:-1]


def model_spec(model: MLP) -> dict[str, Any]:
    """The architecture of `model` as plain values: {'sizes': [...], 'activation': ...}."""
    return {"sizes": model.sizes, "activation": model.activation}


def build_model(sizes: list[int], activation: Activation = "relu", seed: int | None = None) -> MLP:
    """A freshly initialised MLP; with `seed`, initialised deterministically without touching
    the global RNG."""
    if seed is None:
        return MLP(sizes, activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(sizes, activation)


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def hidden_label(hidden: list[int]) -> str:
    """Hidden sizes written like '205-51' (the Hidden column of validation_results.txt)."""
    return "-".join(str(h) for h in hidden)


def layer_table(model: MLP) -> tuple[str, int, int]:
    """Per-layer table (in, out, params, MACs) for summary.txt; returns (text, params, MACs).

    MACs per sample are counted by thop (a Linear costs in*out multiply-accumulates); the
    per-layer rows use the same rule and their sum is checked against thop's total.
    """
    import copy

    from thop import profile  # imported here: only the engine's summaries need it

    rows = [(i + 1, lin.in_features, lin.out_features,
             lin.weight.numel() + lin.bias.numel(), lin.in_features * lin.out_features)
            for i, lin in enumerate(model.linears)]
    probe = copy.deepcopy(model).float()  # thop adds buffers to the modules it profiles
    macs, params = profile(probe, inputs=(torch.zeros(1, model.sizes[0]),), verbose=False)
    total_params, total_macs = sum(r[3] for r in rows), sum(r[4] for r in rows)
    assert int(macs) == total_macs and int(params) == total_params, (macs, params)
    lines = [f"{'Layer':>5} {'In':>6} {'Out':>6} {'Params':>10} {'MACs':>10}"]
    lines += [f"{i:>5} {n_in:>6} {n_out:>6} {p:>10} {m:>10}" for i, n_in, n_out, p, m in rows]
    lines.append(f"{'Total':>5} {'':>6} {'':>6} {total_params:>10} {total_macs:>10}")
    return "\n".join(lines) + "\n", total_params, total_macs
