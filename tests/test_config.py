"""Settings whose defaults depend on the architecture: conv nets retrain at small batches."""

from __future__ import annotations

import json

import pytest

from src.checkpoint import save_checkpoint
from src.config import PruneConfig, Retraining
from src.spec import SpecError, build, cnn3


@pytest.mark.parametrize("arch", ["lenet5", "cnn3"])
def test_conv_presets_retrain_at_batch_64_with_the_lr_scaled_to_it(arch):
    retraining = PruneConfig(arch=arch).retraining
    assert (retraining.batch_size, retraining.lr) == (64, pytest.approx(7e-3 * 64 / 512))


def test_the_mlp_keeps_its_measured_retraining_settings():
    for config in (PruneConfig(), PruneConfig(arch="mlp", hidden=(32, 16))):
        assert (config.retraining.batch_size, config.retraining.lr) == (512, 7e-3)


def test_a_conv_spec_file_and_a_conv_base_model_count_as_conv_nets(tmp_path):
    """The architecture is read where the run takes it from: a spec file, or with only
    --base-model given, the checkpoint's own architecture."""
    spec = cnn3([1, 28, 28], 10)
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps(spec))
    base = save_checkpoint(tmp_path / "base.pth", build(spec, seed=0), dataset="mnist")
    assert PruneConfig(arch=str(arch)).retraining.batch_size == 64
    assert PruneConfig(base_model=str(base)).retraining.batch_size == 64


def test_given_values_and_the_dataset_default_win_over_the_conv_default():
    assert PruneConfig(arch="lenet5", retraining=Retraining(batch_size=128)).retraining \
        .batch_size == 128
    digits = PruneConfig(arch="cnn3", dataset="digits").retraining
    assert (digits.batch_size, digits.lr) == (32, 5e-3)


def test_a_resumed_configuration_does_not_read_the_architecture_again(tmp_path):
    """config.json holds the filled-in values: a session whose spec file is gone still loads."""
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps(cnn3([1, 28, 28], 10)))
    saved = PruneConfig(arch=str(arch)).to_json()
    arch.unlink()
    assert PruneConfig.from_json(saved, "config.json").retraining.batch_size == 64
    with pytest.raises(SpecError, match="net.json: no such architecture file"):
        PruneConfig(arch=str(arch))
