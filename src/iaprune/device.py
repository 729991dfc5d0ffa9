"""Where a model runs: the device (`--device cpu|cuda`) and the memory layout fastest there.

IA-Prune never needs a GPU; `cuda` only moves training, evaluation, scoring and the folds onto
one when torch can use it. A convolutional network is kept in channels-last (NHWC) layout when
that trains it faster on the CPU (README, "Convolutional networks"): oneDNN vectorises NHWC
convolutions across channels, which made LeNet-5 epochs ~1.5x faster in fp32 and 1.3-2x faster
with bf16 products at every pruned size; in fp32, nets with fewer than 16 channels per conv
trained as fast or faster in the default NCHW layout, and evaluating them (always fp32) took
24-32 % less time in NCHW, so they are evaluated from an NCHW copy (`for_inference`). A layout
is only how a tensor is stored: every value stays the same.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from iaprune.errors import UserError
from iaprune.spec import Net, shapes, spec_of
from iaprune_runtime.layers import lookup

Device = Literal["cpu", "cuda"]
# Inference batches hold about this many values in the model's widest layer (4 MiB in float32):
# a LeNet-5 feature map batch then stays in cache (batch 64 evaluated 2x faster per sample
# than batch 8192), and an MLP still gets batches of 1024.
BATCH_VALUES = 1 << 20
MAX_BATCH = 8192
CHANNELS_LAST_FROM = 16  # channels of the widest conv from which a net is kept channels-last


class DeviceError(UserError):
    """A device that torch cannot use on this machine."""


def torch_device(name: str) -> torch.device:
    """The torch device of `--device name`; cuda without a usable GPU is a DeviceError."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: torch sees no usable CUDA GPU here (a CPU-only "
                              "build of torch, no GPU, or no driver); use --device cpu")
        return torch.device("cuda")
    raise DeviceError(f"unknown --device {name!r}; choose from cpu, cuda")


def _channels(model: nn.Module) -> list[int]:
    """Output channels of every conv layer (a producer of feature maps) in `model`."""
    kinds = [(m, lookup(m)) for m in model.modules()]
    return [kind.units(m) for m, kind in kinds if kind is not None and kind.spatial]


def place(model: nn.Module, device: torch.device | str = "cpu", bf16: bool = False
          ) -> nn.Module:
    """`model` itself, moved to `device`, with its 4-D weights channels-last when it has a
    Conv2d and trains with bf16 products, or when a Conv2d has at least CHANNELS_LAST_FROM
    output channels; else in the default layout (its values are unchanged)."""
    model.to(device)
    widths = _channels(model)
    wide = bool(widths) and (bf16 or max(widths) >= CHANNELS_LAST_FROM)
    return model.to(memory_format=torch.channels_last if wide else torch.contiguous_format)


def inference_batch(model: nn.Module) -> int:
    """Batch size for inference (evaluation, folds): the largest power of two whose widest
    activation holds at most BATCH_VALUES values, between 1 and MAX_BATCH."""
    if not isinstance(model, Net):
        return MAX_BATCH
    spec = spec_of(model)
    widest = max(math.prod(shape) for shape in shapes(spec["layers"], spec["input"]))
    fits = max(1, BATCH_VALUES // widest)
    return min(MAX_BATCH, 1 << (fits.bit_length() - 1))


def for_inference(model: nn.Module) -> nn.Module:
    """`model` itself, or when it is a channels-last conv net whose convs all have fewer than
    CHANNELS_LAST_FROM output channels, a copy of it in the default layout (where its fp32
    forward is faster); the same values either way."""
    widths = _channels(model)
    if not widths or max(widths) >= CHANNELS_LAST_FROM or all(
            p.is_contiguous() for p in model.parameters()):
        return model
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)
