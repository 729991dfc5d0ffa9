"""The deploy runtime's InputSpec: recorded standardisation (mean/std) and unbounded ranges,
with old input descriptions read and written as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iaprune_runtime.inputs import MNIST_INPUT, InputRangeError, InputSpec, preprocess

TABLE_INPUT = {"shape": [2], "scale": 1.0, "flatten": True, "dtype": "float32", "range": None,
               "mean": [10.0, -2.0], "std": [4.0, 0.5]}


def test_an_old_input_description_round_trips_unchanged():
    """A description without mean/std is written back exactly as it was read (old bundles)."""
    assert InputSpec.from_dict(MNIST_INPUT, 784).as_dict() == MNIST_INPUT


def test_old_specs_keep_their_range_check():
    """Without a recorded range key the model's inputs must still lie in [0, 1]."""
    spec = InputSpec.from_dict({"shape": [2], "scale": 1.0, "dtype": "float32"}, 2)
    with pytest.raises(InputRangeError):
        preprocess(np.array([[0.5, 3.0]], np.float32), spec)


def test_a_standardising_spec_takes_raw_floats_and_applies_mean_and_std():
    """Floats are raw for a model that standardises: (x * scale - mean) / std per feature."""
    spec = InputSpec.from_dict(TABLE_INPUT, 2)
    out = preprocess(np.array([[14.0, -1.0], [2.0, -3.0]]), spec)
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [-2.0, -2.0]]))


def test_raw_false_takes_values_already_standardised():
    """raw=False feeds values as they are, unbounded when no range is recorded."""
    spec = InputSpec.from_dict(TABLE_INPUT, 2)
    out = preprocess(np.array([[7.5, -9.0]]), spec, raw=False)
    assert torch.equal(out, torch.tensor([[7.5, -9.0]]))


def test_a_standardising_spec_round_trips_through_a_manifest():
    """mean, std and an open range are written to the manifest and read back."""
    spec = InputSpec.from_dict(TABLE_INPUT, 2)
    assert InputSpec.from_dict(spec.as_dict(), 2) == spec and spec.as_dict()["range"] is None


@pytest.mark.parametrize("bad", [{"mean": [1.0]}, {"std": [1.0, 0.0]}])
def test_mean_or_std_that_do_not_fit_the_model_are_refused(bad):
    """A mean/std of the wrong length, or a zero std, is a bad input description."""
    with pytest.raises(ValueError, match="does not fit a model with 2 inputs"):
        InputSpec.from_dict({**TABLE_INPUT, **bad}, 2)
