"""Optional ONNX export of a deployed network, checked against torch with onnxruntime.

The ONNX model takes flat float32 inputs (batch, n_features), as preprocess() makes them, and
reshapes them itself like the torch model, so raw images go in the same way for MLPs and CNNs.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ATOL = 1e-4  # float32 kernels differ in summation order; logits must agree to this


class OnnxUnavailable(RuntimeError):
    """onnx / onnxruntime are not installed, or this torch cannot export."""


def onnx_missing() -> str | None:
    """Why ONNX export cannot run here, or None when onnx and onnxruntime are installed."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def export_onnx(model: nn.Module, n_features: int) -> bytes:
    """The model as ONNX bytes: input 'input' (batch, n_features) float32 -> 'logits'."""
    reason = onnx_missing()
    if reason:
        raise OnnxUnavailable(reason)
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; these plain layer graphs export identically either way
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.eval(), (torch.zeros(1, n_features),), buffer, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=OPSET)
        except (ImportError, RuntimeError, TypeError) as exc:
            raise OnnxUnavailable(f"torch.onnx.export failed ({exc})") from None
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def onnx_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    """ONNX bytes loaded once into an onnxruntime CPU session, as a function (n, n_features)
    float32 -> (n, n_classes) (a session per call would cost more than the batches it runs)."""
    reason = onnx_missing()
    if reason:
        raise OnnxUnavailable(reason)
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def logits(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(np.float32)})
        return torch.from_numpy(out)

    return logits


def onnx_logits(data: bytes, x: torch.Tensor) -> torch.Tensor:
    """Run ONNX bytes with onnxruntime on CPU: (n, n_features) float32 -> (n, n_classes)."""
    return onnx_runner(data)(x)


@torch.no_grad()
def check_onnx(onnx: bytes | Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
               x: torch.Tensor) -> float:
    """Largest |ONNX - torch| logit difference on x; ValueError if above ATOL. `onnx`: the ONNX
    bytes, or an onnx_runner of them (to check many batches with one session)."""
    run_onnx = onnx if callable(onnx) else onnx_runner(onnx)
    diff = float((model.eval()(x) - run_onnx(x)).abs().max())
    if not diff <= ATOL:  # also catches NaN
        raise ValueError(f"ONNX model disagrees with torch (max |logit diff| {diff:.3g} > {ATOL})")
    return diff
