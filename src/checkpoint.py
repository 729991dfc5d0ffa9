"""Self-describing checkpoints (best_model.pth), atomic file writes and safe loading."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from src.model import MLP, model_spec

FORMAT = "ia-prune/1"


class CheckpointError(ValueError):
    """A file that is missing, truncated, corrupt or not an IA-Prune checkpoint."""


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` via a temp file in its folder + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, model: MLP, **meta: Any) -> Path:
    """Save `model` with its architecture and `meta` (plain values only) as a best_model.pth."""
    payload = {"format": FORMAT, **model_spec(model), **meta}
    payload["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, buffer.getvalue())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a best_model.pth with weights_only=True; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load (not plain tensors/values): "
                              f"{_first_line(exc)}") from None
    except Exception as exc:  # torch raises many kinds (RuntimeError, KeyError, EOFError...)
        first = _first_line(exc)
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an IA-Prune checkpoint (expected format {FORMAT!r})")
    for key in ("sizes", "activation", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return payload


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | os.PathLike = "") -> MLP:
    """Rebuild the MLP a checkpoint describes and load its weights strictly."""
    try:
        model = MLP(checkpoint["sizes"], checkpoint["activation"])
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the recorded architecture "
                              f"({_first_line(exc)})") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[MLP, dict[str, Any]]:
    """Load a best_model.pth into an MLP in eval mode; returns (model, checkpoint dict)."""
    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint, path), checkpoint

