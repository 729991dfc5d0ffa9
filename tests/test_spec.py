"""Architecture specs: build, read back, presets, files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from iaprune.spec import (
    PRESETS,
    SpecError,
    build,
    check_spec,
    lenet5,
    max_pool,
    mlp,
    read_spec,
    resolve_arch,
    spec_of,
)

EVERY_LAYER = {"input": [1, 12, 12], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    {"type": "maxpool2d", "kernel": 2}, {"type": "conv2d", "out": 6, "kernel": 3, "stride": 2},
    "tanh", {"type": "avgpool2d", "kernel": 2, "stride": 1}, "flatten",
    {"type": "dropout", "p": 0.25}, {"type": "linear", "out": 7, "bias": False}, "batchnorm",
    "sigmoid", {"type": "linear", "out": 3}]}


def test_build_infers_every_in_size_and_spec_of_reads_it_back():
    """Every layer type builds with inferred in-sizes, runs, and reads back to the same spec."""
    model = build(EVERY_LAYER, seed=0)
    assert model(torch.rand(5, 144)).shape == (5, 3)
    assert model(torch.rand(5, 1, 12, 12)).shape == (5, 3)
    assert spec_of(model) == check_spec(EVERY_LAYER)
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[10], nn.BatchNorm1d)
    assert model[4].in_channels == 4 and model[9].in_features == 6  # 12 -> 12 -> 6 -> 2 -> 1


def test_the_mlp_preset_keeps_the_thesis_layout():
    """mlp is linear 256, relu, linear 64, relu, linear 10 reading flattened 28x28 images, with
    the state_dict keys of the first checkpoint format."""
    model = build(mlp([1, 28, 28], 10))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                        "4.weight", "4.bias"]
    assert model.flat_input and model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_seeded_builds_are_identical_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build(PRESETS["lenet5"]([1, 28, 28], 10), seed=3), build(
        PRESETS["lenet5"]([1, 28, 28], 10), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_lenet5_and_cnn3_presets_have_their_published_layouts():
    lenet = build(PRESETS["lenet5"]([1, 28, 28], 10))
    assert [type(m).__name__ for m in lenet] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear",
        "ReLU", "Linear"]
    assert lenet[7].in_features == 800 and sum(p.numel() for p in lenet.parameters()) == 431080
    cnn = build(PRESETS["cnn3"]([1, 28, 28], 10))
    assert [m.out_channels for m in cnn if isinstance(m, nn.Conv2d)] == [2, 4, 8]
    assert cnn[-1].in_features == 8 * 28 * 28


def test_spec_of_names_an_unsupported_module():
    with pytest.raises(TypeError, match="module 1: unsupported module Softsign"):
        spec_of(nn.Sequential(nn.Linear(4, 3), nn.Softsign(), nn.Linear(3, 2)), [4])


@pytest.mark.parametrize("layers, message", [
    ([{"type": "linear"}], "needs 'out'"),
    ([{"type": "linear", "out": 0}], "integer >= 1"),
    ([{"type": "conv", "out": 3}], "unknown layer type 'conv'"),
    ([{"type": "relu", "p": 1}], "has no field"),
    ([{"type": "conv2d", "out": 2, "kernel": 3}, "flatten", {"type": "linear", "out": 2}],
     "input"),
    ([{"type": "conv2d", "out": 2, "kernel": 9}, "flatten", {"type": "linear", "out": 2}],
     "does not fit"),
    ([{"type": "linear", "out": 3}, "relu"], "last layer must be a linear"),
])
def test_bad_specs_are_one_clear_error(layers, message):
    shape = [4] if layers[0].get("type") != "conv2d" else [1, 8, 8]
    if "input" == message:
        layers = [{"type": "conv2d", "out": 2, "kernel": 3}, {"type": "linear", "out": 2}]
        message = "add a flatten"
    with pytest.raises(SpecError, match=message):
        check_spec({"input": shape, "layers": layers})


def test_spec_files_take_a_full_spec_or_a_bare_layer_list(tmp_path):
    full = tmp_path / "full.json"
    full.write_text(json.dumps(mlp([1, 8, 8], 10, [16, 8])))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"type": "linear", "out": 16}, "relu",
                                {"type": "linear", "out": 10}]))
    assert read_spec(full) == mlp([1, 8, 8], 10, [16, 8])
    assert read_spec(bare, [1, 8, 8])["input"] == [1, 8, 8]
    with pytest.raises(SpecError, match="is a folder"):
        read_spec(tmp_path)
    with pytest.raises(SpecError, match="does not match the dataset"):
        resolve_arch(str(full), [1, 28, 28], 10)


def test_resolve_arch_builds_the_mlp_from_hidden_sizes():
    spec = resolve_arch("mlp", [1, 8, 8], 10, hidden=[12, 6], activation="tanh")
    assert [layer.get("out") for layer in spec["layers"] if layer["type"] == "linear"] == [
        12, 6, 10]
    with pytest.raises(SpecError, match=r"integers >= 1, got \[0, 64\]"):
        resolve_arch("mlp", [1, 8, 8], 10, hidden=[0, 64])


@pytest.mark.parametrize(("kernel", "stride", "size"), [(2, 2, 24), (2, 2, 7), (3, 2, 9),
                                                        (3, 1, 6), (2, 3, 8), (5, 5, 5)])
def test_max_pool_by_slices_equals_torchs_max_pool(kernel, stride, size):
    """The inference path of a Net's max pools gives torch's values exactly, odd sizes and
    overlapping windows included, and NaN where torch has NaN."""
    pool = nn.MaxPool2d(kernel, stride)
    x = torch.randn(3, 4, size, size + 1)
    x[0, 0, 0, 0] = float("nan")
    assert torch.equal(max_pool(pool, x).isnan(), pool(x).isnan())
    torch.testing.assert_close(max_pool(pool, x), pool(x), rtol=0, atol=0, equal_nan=True)


def test_a_net_infers_what_it_trains_with():
    """Without autograd (evaluation, deployment) a Net pools by slices; its outputs equal the
    ones computed with autograd through torch's max pools."""
    model = build(lenet5([1, 28, 28], 10), seed=0).eval()
    x = torch.rand(6, 784)
    with torch.no_grad():
        inferred = model(x)
    torch.testing.assert_close(inferred, model(x).detach(), rtol=0, atol=0)
