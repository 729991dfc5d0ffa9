"""Where models run: --device, the channels-last placement of conv nets, inference batches."""

from __future__ import annotations

import pytest
import torch

from iaprune import cli
from iaprune.checkpoint import load_model, save_checkpoint
from iaprune.config import PruneConfig, Retraining, Training
from iaprune.device import DeviceError, for_inference, inference_batch, place, torch_device
from iaprune.engine import run
from iaprune.iterativeprune import main
from iaprune.prune import value_at
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.spec import build, cnn3, lenet5, mlp

SMALL_CNN = {"input": [1, 8, 8], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    {"type": "maxpool2d", "kernel": 2}, {"type": "conv2d", "out": 6, "kernel": 3}, "relu",
    "flatten", {"type": "linear", "out": 10}]}


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_is_the_default_device():
    """Without --device, everything runs on the CPU."""
    assert PruneConfig().device == "cpu" and torch_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    """--device cuda on a machine where torch sees no GPU names the problem and the fix."""
    no_cuda(monkeypatch)
    with pytest.raises(DeviceError, match="no usable CUDA GPU.*use --device cpu"):
        torch_device("cuda")


def test_cuda_without_a_gpu_is_one_line_and_writes_nothing(monkeypatch, tmp_path, capsys):
    """The command line refuses --device cuda before it writes anything (exit code 2)."""
    no_cuda(monkeypatch)
    session = tmp_path / "s"
    code = cli.run(main, ["--dataset", "digits", "--device", "cuda", "--session", str(session),
                          "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --device cuda") and "\n" not in err
    assert not session.exists()


def test_an_unknown_device_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="cpu, cuda"):
        PruneConfig(device="tpu")


WIDE_CNN = {"input": [1, 8, 8], "layers": [
    {"type": "conv2d", "out": 16, "kernel": 3}, "relu", {"type": "conv2d", "out": 16, "kernel": 3},
    "relu", {"type": "maxpool2d", "kernel": 2}, "flatten", {"type": "linear", "out": 10}]}


def test_a_conv_net_with_wide_convs_is_placed_channels_last_with_the_same_outputs():
    """Channels-last is only a layout: the placed model computes the same logits."""
    model = build(WIDE_CNN, seed=0).eval()
    x = torch.rand(5, 64)
    before = model(x)
    assert place(model) is model
    assert model[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[2].weight.is_contiguous()
    torch.testing.assert_close(model(x), before)


def test_a_conv_net_with_narrow_convs_keeps_the_default_layout():
    """Below 16 channels per conv NCHW is as fast: a narrow (e.g. pruned) net is placed back
    into the default layout."""
    model = place(build(WIDE_CNN, seed=0))
    narrow = place(build(SMALL_CNN, seed=0))
    assert narrow[0].weight.is_contiguous() and narrow[4].weight.is_contiguous()
    for conv in (model[0], model[2]):
        conv.out_channels = 15  # as if pruned to 15 channels (only the counts matter here)
    assert place(model)[2].weight.is_contiguous()


def test_a_narrow_conv_net_trained_with_bf16_products_is_placed_channels_last():
    """With bf16 products NHWC trained every LeNet-5 size faster, narrow ones too."""
    narrow = place(build(SMALL_CNN, seed=0), bf16=True)
    assert narrow[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert not narrow[4].weight.is_contiguous()


def test_placing_an_mlp_leaves_its_weights_as_they_are():
    model = build(mlp([64], 10, (16,)), seed=0)
    weight = model[0].weight
    place(model, bf16=True)
    assert model[0].weight is weight and weight.is_contiguous()


def test_checkpoints_of_a_placed_model_hold_contiguous_cpu_tensors(tmp_path):
    """A checkpoint never depends on where or in which layout the model ran."""
    model = place(build(WIDE_CNN, seed=0))
    path = save_checkpoint(tmp_path / "m.pth", model)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in state.values())
    loaded, _ = load_model(path)
    x = torch.rand(3, 64)
    torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.mark.parametrize(("spec", "batch"), [
    (mlp([1, 28, 28], 10), 1024),  # widest: the 784 inputs
    (lenet5([1, 28, 28], 10), 64),  # widest: conv1's 20x24x24 maps
    (cnn3([1, 28, 28], 10), 128),  # widest: 8x28x28 maps
])
def test_inference_batches_hold_about_a_million_values_of_the_widest_layer(spec, batch):
    assert inference_batch(build(spec)) == batch


def test_values_in_batches_equal_one_pass_over_all_rows():
    """value_at computes in inference-sized batches: the same values as one big pass."""
    model = build(lenet5([1, 28, 28], 10), seed=0).eval()
    x = torch.rand(150, 784)  # more than one batch of 64
    whole = torch.nn.Sequential(*list(model)[:4])(x.reshape(150, 1, 28, 28))
    torch.testing.assert_close(value_at(model, x, 4), whole)


def test_a_session_records_its_device(tmp_path):
    """--device is saved in the session's config.json with every other setting."""
    config = PruneConfig(dataset="digits", hidden=(8,), training=Training(epochs=1),
                         retraining=Retraining(epochs=1))
    retain = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(0, (8,), 100.0), ScheduleRow(1, (6,), 75.0)], retain)
    result = run(config, tmp_path / "s", retain=retain, quiet=True, log=lambda line: None)
    assert [r["Hidden"] for r in result.rows] == ["8", "6"]
    assert '"device": "cpu"' in (tmp_path / "s" / "config.json").read_text()


def test_a_narrow_channels_last_net_is_evaluated_from_an_nchw_copy():
    """for_inference leaves the model alone and returns an NCHW copy with the same outputs;
    wide nets and MLPs are returned as they are."""
    narrow = place(build(SMALL_CNN, seed=0), bf16=True).eval()
    copy = for_inference(narrow)
    assert copy is not narrow and copy[4].weight.is_contiguous()
    assert not narrow[4].weight.is_contiguous()  # the model itself keeps its layout
    x = torch.rand(4, 64)
    torch.testing.assert_close(copy(x), narrow(x))
    wide = place(build(WIDE_CNN, seed=0))
    assert for_inference(wide) is wide
    net = build(mlp([64], 10, (16,)), seed=0)
    assert for_inference(net) is net
