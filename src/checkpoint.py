"""Self-describing checkpoints (best_model.pth), atomic file writes and safe loading."""

from __future__ import annotations

import io
import os
import pickle
import re
import secrets
import warnings
from pathlib import Path
from typing import Any

import torch

from src.cli import file_problem
from src.model import MLP, model_spec

FORMAT = "ia-prune/1"


class CheckpointError(ValueError):
    """A file that is missing, truncated, corrupt or not an IA-Prune checkpoint."""


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """Create a fresh temp file next to `path`, with mode 0666 & ~umask like any new file.

    (tempfile.mkstemp makes it 0600, and os.replace would hand that private mode to `path`.)
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a name clash with another writer: draw again
            continue


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` via a temp file in its folder + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = _new_temp_file(path)
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


def _load_problem(exc: Exception) -> str:
    """What a failed weights_only torch.load means, in our words: torch's own message advises
    retrying with weights_only=False, which could run code from the file, so it is never relayed."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            return (f"refused to load: it holds Python objects ({found.group(1)}), not only "
                    f"tensors and plain values, and loading those could run code")
        return "not a PyTorch checkpoint (torch.load cannot read it)"
    return f"truncated or corrupt checkpoint ({_first_line(exc)})"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a best_model.pth with weights_only=True; errors name the file."""
    path = Path(path)
    problem = file_problem(path, "checkpoint file", inside="best_model.pth")
    if problem:
        raise CheckpointError(problem)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted copy?)")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        raise CheckpointError(f"{path}: {_load_problem(exc)}") from None
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

