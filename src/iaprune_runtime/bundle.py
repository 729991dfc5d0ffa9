"""Deploy bundles: a folder with model.pth, manifest.json (sha256-checked) and maybe model.onnx."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import atomic_write, holding, parse_json, remove_temp_files
from .inputs import InputSpec
from .model import (
    BundleError,
    DeployedNet,
    count_macs,
    count_params,
    load_checkpoint_file,
    model_from_checkpoint,
    read_checkpoint,
)
from .onnx_export import OnnxUnavailable, check_onnx, export_onnx
from .user_model import InputMode, copy_into

__version__ = "0.2.0"
BUNDLE_FORMAT = "ia-prune-bundle/2"  # records the architecture spec
LEGACY_BUNDLE_FORMAT = "ia-prune-bundle/1"  # an MLP by its sizes and activation (still loads)
REQUIRED_KEYS = {BUNDLE_FORMAT: ("sha256", "spec"),
                 LEGACY_BUNDLE_FORMAT: ("sha256", "sizes", "activation")}
MANIFEST, MODEL_FILE, ONNX_FILE = "manifest.json", "model.pth", "model.onnx"
LOCK_FILE = ".bundle.lock"  # held while a bundle is written (then removed): one writer at a time
RESULTS = Path("prune_w_retrain_results") / "recommended.txt"  # under a session's mode folder
MODEL_NAME = "best_model.pth"  # an iteration's kept model, in <mode>/<i>/prune_w_retrain/
MODES = ("iterative_pruning", "one_shot_pruning")
ONNX_CHECK_ROWS = 64  # random inputs the ONNX export is compared on
SHA256 = re.compile(r"[0-9a-f]{64}")
def sha256(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a bundle folder; BundleError when the folder is not a bundle."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if not path.is_file():
        raise BundleError(f"{folder}: not an IA-Prune bundle (no {MANIFEST})")
    check_no_links(folder)
    try:
        manifest = parse_json(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in REQUIRED_KEYS:
        raise BundleError(f"{path}: not an IA-Prune bundle manifest "
                          f"(expected format {BUNDLE_FORMAT!r})")
    for key in REQUIRED_KEYS[manifest["format"]]:
        if key not in manifest:
            raise BundleError(f"{path}: manifest lacks {key!r}")
    check_manifest(manifest, path)
    return manifest


def check_no_links(folder: Path) -> None:
    """Refuse a bundle folder holding a symbolic link: a bundle's files are its own, and a link
    would make verify and load read (and vouch for) a file outside it."""
    links = sorted(p.name for p in folder.iterdir() if p.is_symlink())
    if links:
        raise BundleError(f"{folder / links[0]}: is a symbolic link; a bundle holds its own "
                          f"files, refusing it")


def check_finite(model: nn.Module, source: Path | str) -> None:
    """Refuse a model with NaN or infinite weights (it would predict p=nan)."""
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise BundleError(f"{source}: non-finite weights (NaN or inf) in {', '.join(bad[:4])}"
                          f"{' ...' if len(bad) > 4 else ''}; refusing a broken model")


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Manifest fields by type and range before use: sha256 sums are 64 hex digits, file
    fields name a file inside the bundle folder, a recorded accuracy is a finite number."""
    _check_sha256(manifest["sha256"], "sha256", path)
    onnx = manifest.get("onnx")
    if onnx is not None and not isinstance(onnx, dict):
        raise BundleError(f"{path}: 'onnx' must be an object or null, got {onnx!r}")
    if onnx and "file" in onnx:
        _check_member(onnx["file"], "onnx.file", path)
        _check_sha256(onnx.get("sha256"), "onnx.sha256", path)
    for key in ("test_accuracy", "val_accuracy"):
        value = manifest.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise BundleError(f"{path}: {key!r} must be a finite number or null, got {value!r}")


def _check_sha256(value: Any, key: str, path: Path) -> None:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise BundleError(f"{path}: {key!r} must be a sha256 (64 hex digits), got {value!r}")


def _check_member(name: Any, key: str, path: Path) -> None:
    """A file field: a plain file name, so the file lies in the bundle folder itself."""
    if not isinstance(name, str) or not name or name in (".", "..") or \
            Path(name).name != name or "\\" in name or "\0" in name:
        raise BundleError(f"{path}: {key!r} must name a file inside the bundle folder, got "
                          f"{name!r}")


def checked_file(folder: Path, name: str, expected: str) -> bytes:
    """The bytes of a bundle file whose sha256 must equal the manifest's."""
    path = folder / name
    if path.is_symlink():
        raise BundleError(f"{path}: is a symbolic link; a bundle holds its own files, refusing it")
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    data = path.read_bytes()
    if sha256(data) != expected:
        raise BundleError(f"{path}: sha256 does not match {MANIFEST} (expected {expected[:12]}..., "
                          f"got {sha256(data)[:12]}...): the file was modified or replaced; "
                          f"refusing it (rebuild the bundle with python -m iaprune_runtime bundle)")
    return data


def _attach(model: DeployedNet, info: dict[str, Any]) -> DeployedNet:
    """Record the preprocessing, class names and metadata on a loaded model."""
    model.input_spec = InputSpec.from_dict(info.get("input"), model.n_inputs)
    classes = info.get("classes")
    if isinstance(classes, list) and len(classes) == len(model.classes):
        model.classes = [str(c) for c in classes]
    model.info = info
    return model


def _same_architecture(manifest: dict[str, Any], model: DeployedNet) -> bool:
    """Whether the manifest describes the network rebuilt from model.pth."""
    if manifest["format"] == LEGACY_BUNDLE_FORMAT:
        return (model.sizes == list(manifest["sizes"])
                and model.activation == manifest["activation"])
    return manifest["spec"] == model.spec


def load(path: str | os.PathLike) -> DeployedNet:
    """An nn.Module in eval mode from a bundle folder (sha256-checked) or a best_model.pth."""
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if not path.exists():
        raise BundleError(f"{path}: no such bundle folder or checkpoint file")
    if path.is_dir():
        manifest = read_manifest(path)
        source = path / MODEL_FILE
        checkpoint = read_checkpoint(checked_file(path, MODEL_FILE, manifest["sha256"]), source)
        model = model_from_checkpoint(checkpoint, source)
        if not _same_architecture(manifest, model):
            raise BundleError(f"{source}: architecture differs from {MANIFEST}")
        check_finite(model, source)
        return _attach(model, manifest)
    checkpoint, _ = load_checkpoint_file(path)
    meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    model = model_from_checkpoint(checkpoint, path)
    check_finite(model, path)
    return _attach(model, meta)


def load_pruned_model(model: nn.Module, path: str | os.PathLike,
                      inputs: InputMode = "error") -> nn.Module:
    """Resize the Conv2d, BatchNorm1d/2d and Linear layers of your own model in place to a
    checkpoint's and load its weights strictly.

    `path` is a bundle folder or a best_model.pth. The i-th such layer of `model` (registration
    order) gets the i-th of the checkpoint; a different count, layer kind, kernel/stride/padding,
    input or output size is a ValueError and leaves the model as it was. `inputs` says what to
    do with an input-pruned checkpoint (see deploy.user_model): "error", "indices" (sets
    `model.input_indices`; your forward must apply them) or "zeros". The model is put in eval
    mode and gets `input_spec`, so predict(model, raw) works (it passes images shaped
    (batch, *input) to a CNN, flat (batch, features) to an MLP).

    Args:
        model: your own module, at its unpruned size.
        path: a bundle folder or a best_model.pth.
        inputs: "error", "indices" or "zeros" for an input-pruned checkpoint.

    Returns:
        nn.Module: `model` itself, resized, with the pruned weights, in eval mode.

    Example:
        >>> from torch import nn
        >>> import iaprune_runtime as deploy
        >>> mine = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> deploy.load_pruned_model(mine, "pruned.pth")[0]  # a checkpoint of 64-8-10
        Linear(in_features=64, out_features=8, bias=True)
    """
    if not isinstance(model, nn.Module) or not isinstance(path, (str, os.PathLike)):
        given = model.__name__ if isinstance(model, type) else type(model).__name__
        raise TypeError(f"load_pruned_model(model, path) takes your model built at its unpruned "
                        f"size (an nn.Module instance such as MyNet()) and then a bundle folder "
                        f"or best_model.pth; got {given} and {type(path).__name__}")
    reference = load(path)
    copy_into(model, reference, inputs)
    # your CNN takes images (batch, *shape); an MLP takes them flat, as the engine's does
    model.input_spec = replace(reference.input_spec, flatten=reference.flat_input)
    return model


def build_manifest(checkpoint: dict[str, Any], model: DeployedNet, data: bytes,
                   source: str) -> dict[str, Any]:
    """The manifest of a bundle for `checkpoint` (rebuilt as `model`, file bytes `data`)."""
    metrics = checkpoint.get("metrics") if isinstance(checkpoint.get("metrics"), dict) else {}
    spec = InputSpec.from_dict(checkpoint.get("input"), model.n_inputs)
    classes = checkpoint.get("classes") or model.classes
    info = checkpoint.get("input") if isinstance(checkpoint.get("input"), dict) else {}
    record = checkpoint.get("data")
    return {
        "format": BUNDLE_FORMAT,
        "model_file": MODEL_FILE,
        "sha256": sha256(data),
        "spec": model.spec,
        "features_read": model.features_read,
        "sizes": model.sizes,
        "hidden": model.hidden,
        "activation": model.activation,
        "dataset": checkpoint.get("dataset"),
        "val_size": checkpoint.get("val_size"),
        "split_seed": checkpoint.get("split_seed"),
        # your own data: its table's label column, and its source and fingerprint (what
        # `iaprune deploy verify` reads again and compares)
        "target": info.get("target"),
        "data": record if isinstance(record, dict) else None,
        "input": spec.as_dict(),
        "classes": [str(c) for c in classes],
        "iteration": checkpoint.get("iteration"),
        "percent_retained": checkpoint.get("percent_retained"),
        "criterion": checkpoint.get("criterion"),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "metrics": metrics,
        "params": count_params(model),
        "macs": int(checkpoint.get("macs") or count_macs(model)),
        "project_version": checkpoint.get("version"),
        "deploy_version": __version__,
        "source": source,
        "onnx": None,
    }


def write_bundle(checkpoint_path: str | os.PathLike, out: str | os.PathLike,
                 onnx: bool = True) -> dict[str, Any]:
    """Write model.pth, model.onnx (when onnx/onnxruntime are installed) and manifest.json.

    Returns the manifest; manifest['onnx'] is the ONNX entry or {'skipped': reason}. Every
    check runs before the first write; the writes hold the folder's lock (.bundle.lock, removed
    when done), so a second bundle into the same folder waits, then writes a whole bundle.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    blocker = next((p for p in out.parents if p.exists()), None)  # nothing written below a file
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"{out}: {blocker} is a file, not a folder")
    checkpoint, data = load_checkpoint_file(checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    check_finite(model, checkpoint_path)
    manifest = build_manifest(checkpoint, model, data, str(checkpoint_path))
    onnx_entry: dict[str, Any] = {"skipped": "disabled (--no-onnx)"}
    onnx_bytes = None
    if onnx:
        try:
            onnx_bytes = export_onnx(model, model.n_inputs)
        except OnnxUnavailable as exc:
            onnx_entry = {"skipped": str(exc)}
    if onnx_bytes is not None:
        x = torch.rand(ONNX_CHECK_ROWS, model.n_inputs, generator=torch.Generator().manual_seed(0))
        diff = check_onnx(onnx_bytes, model, x)
        onnx_entry = {"file": ONNX_FILE, "sha256": sha256(onnx_bytes), "input": "input",
                      "output": "logits", "max_abs_diff": diff}
    manifest["onnx"] = onnx_entry

    with holding(out / LOCK_FILE):  # another bundle into this folder waits for this one
        remove_temp_files(out)  # a killed bundle's leftovers
        # model files first, manifest last: until the manifest is replaced the folder is refused
        atomic_write(out / MODEL_FILE, data)
        if onnx_bytes is not None:
            atomic_write(out / ONNX_FILE, onnx_bytes)
        else:
            (out / ONNX_FILE).unlink(missing_ok=True)  # never leave a stale export behind
        atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        (out / LOCK_FILE).unlink()  # while held: a waiting writer then locks a fresh file
    return manifest


def _resolve(recorded: str, anchor: Path) -> Path:
    """The checkpoint named in recommended.txt (`anchor`, in <session>/<mode>/RESULTS).

    The engine records it relative to the session (<mode>/<i>/prune_w_retrain/best_model.pth),
    so a copied or moved session names its own model. Files written before that hold an absolute
    path or one relative to the repository root: the same <mode>/<i>/... inside this session is
    taken first (a copy must not bundle its original's model), then the path as written.
    """
    path = Path(recorded)
    mode_dir = Path(os.path.abspath(anchor)).parent.parent
    candidates = [] if path.is_absolute() else [mode_dir.parent / path]
    tail = path.parts[-4:]
    if len(tail) == 4 and tail[0] == mode_dir.name and tail[1].isdigit() \
            and tail[2:] == ("prune_w_retrain", MODEL_NAME):
        candidates.append(mode_dir.joinpath(*tail[1:]))
    candidates += [path] if path.is_absolute() else [Path.cwd() / path] + [
        folder / path for folder in anchor.parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{anchor}: the recommended checkpoint {recorded!r} does not exist")


def find_recommended(path: str | os.PathLike, mode: str | None = None) -> Path:
    """The best_model.pth named by recommended.txt of a session folder (or a mode folder)."""
    path = Path(path)
    if path.is_file():
        raise ValueError(f"{path}: is a file, not a session folder (give a checkpoint file "
                         f"without --recommended)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such session folder")
    if (path / RESULTS).is_file():  # a mode folder given directly
        found = [path / RESULTS]
    elif mode is not None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
        found = [path / mode / RESULTS] if (path / mode / RESULTS).is_file() else []
    else:
        found = [path / m / RESULTS for m in MODES if (path / m / RESULTS).is_file()]
    if not found:
        where = f"{path}/{mode or '<mode>'}/{RESULTS}"
        raise FileNotFoundError(f"{where}: missing (has the session finished?)")
    if len(found) > 1:
        raise ValueError(f"{path}: both modes have a recommendation; choose one with --mode "
                         f"({' or '.join(MODES)})")
    try:
        text = found[0].read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{found[0]}: not a text file") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{found[0]}: empty")
    return _resolve(lines[0], found[0])
