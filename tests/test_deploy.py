"""deploy/: bundles, torch-only loading, loading into a user's class, preprocessing, images, CLI."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import iaprune_runtime as deploy
from iaprune import spec as src_spec
from iaprune.checkpoint import load_model, save_checkpoint
from iaprune.concatenate import concatenate
from iaprune.data import load_dataset
from iaprune.device import inference_batch
from iaprune.model import layer_table, mlp_net
from iaprune.records import write_validation_results
from iaprune.validator import evaluate_split
from iaprune_runtime.__main__ import main, run
from iaprune_runtime.bundle import find_recommended, write_bundle
from iaprune_runtime.idx import load_test_split, parse_idx
from iaprune_runtime.images import to_gray
from iaprune_runtime.inputs import InputSpec, preprocess, read_inputs
from iaprune_runtime.model import count_macs

DEPLOY_DIR = Path(deploy.__file__).parent
MNIST_INPUT = {"shape": [1, 28, 28], "scale": 1 / 255, "flatten": True, "dtype": "uint8",
               "range": [0.0, 1.0]}
METRICS = {"train_loss": 0.1, "train_accuracy": 98.0, "val_loss": 0.12, "val_accuracy": 97.5,
           "test_loss": 0.11, "test_accuracy": 97.3}


def engine_checkpoint(path: Path, sizes: list[int], seed: int = 0, **overrides) -> Path:
    """A best_model.pth with the fields the engine writes."""
    meta = dict(dataset="mnist", val_size=5000, split_seed=0, input=MNIST_INPUT,
                classes=[str(d) for d in range(10)], iteration=3, hidden=sizes[1:-1],
                percent_retained=25.0, metrics=METRICS, params=1, macs=2,
                criterion="interval_adjoint", version="0.1.0")
    meta.update(overrides)
    return save_checkpoint(path, mlp_net(sizes, seed=seed), **meta)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return engine_checkpoint(tmp_path / "best_model.pth", [784, 20, 8, 10])


@pytest.fixture
def bundle(tmp_path, checkpoint) -> Path:
    write_bundle(checkpoint, tmp_path / "bundle", onnx=False)
    return tmp_path / "bundle"


def images(n: int, seed: int = 0) -> np.ndarray:
    """Raw MNIST-like uint8 images (n, 28, 28)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


class SimpleNN(nn.Module):
    """A hand-written 3-layer MLP, as the thesis defines it."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(len(x), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


# ---- bundles and load ------------------------------------------------------------------------

def test_bundle_round_trip_gives_identical_outputs(checkpoint, bundle):
    """A model loaded from a bundle computes exactly what the engine's checkpoint model computes."""
    reference, _ = load_model(checkpoint)
    model = deploy.load(bundle)
    x = torch.rand(32, 784)
    assert torch.equal(model(x), reference(x))
    assert not model.training


def test_load_reads_a_best_model_pth_directly(checkpoint):
    """load() also takes a best_model.pth and rebuilds it with its recorded preprocessing."""
    reference, _ = load_model(checkpoint)
    model = deploy.load(checkpoint)
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(model(x), reference(x))
    assert model.input_spec == InputSpec() and model.classes[7] == "7"


def test_manifest_records_architecture_data_metrics_and_checksum(checkpoint, bundle):
    """manifest.json carries sizes, activation, dataset, input, classes, iteration, accuracies,
    params, MACs, the sha256 of model.pth and the project version."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((bundle / "model.pth").read_bytes()).hexdigest()
    assert manifest["sizes"] == [784, 20, 8, 10] and manifest["activation"] == "relu"
    assert manifest["dataset"] == "mnist" and manifest["input"] == MNIST_INPUT
    assert manifest["classes"] == [str(d) for d in range(10)] and manifest["iteration"] == 3
    assert manifest["test_accuracy"] == 97.3 and manifest["val_accuracy"] == 97.5
    assert manifest["params"] == 784 * 20 + 20 + 20 * 8 + 8 + 8 * 10 + 10
    assert manifest["macs"] == 2  # the recorded value wins
    assert manifest["project_version"] == "0.1.0" and manifest["deploy_version"]


def test_manifest_falls_back_for_a_minimal_checkpoint(tmp_path):
    """Only format/sizes/activation/state_dict are required: MACs, params and MNIST input are
    derived."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([784, 6, 10], seed=0))
    manifest = write_bundle(path, tmp_path / "b", onnx=False)
    assert manifest["macs"] == 784 * 6 + 6 * 10 and manifest["params"] == 784 * 6 + 6 + 6 * 10 + 10
    assert manifest["input"] == MNIST_INPUT and manifest["test_accuracy"] is None
    assert deploy.load(tmp_path / "b").sizes == [784, 6, 10]


# ---- load_pruned_model -----------------------------------------------------------------------

def test_load_pruned_model_resizes_a_hand_written_class(checkpoint):
    """SimpleNN (784-256-64-10) shrinks to the checkpoint's 784-20-8-10 and computes the same."""
    model = SimpleNN()
    assert deploy.load_pruned_model(model, checkpoint) is model
    assert (model.fc1.out_features, model.fc2.in_features, model.fc2.out_features) == (20, 20, 8)
    assert model.fc2.weight.shape == (8, 20) and model.fc3.weight.shape == (10, 8)
    x = torch.rand(16, 784)
    assert torch.equal(model(x), deploy.load(checkpoint)(x))


def test_load_pruned_model_from_a_bundle_supports_predict(bundle):
    """After load_pruned_model, predict(model, raw uint8) gives the bundle model's classes."""
    model = deploy.load_pruned_model(SimpleNN(), bundle)
    raw = images(20)
    expected = deploy.predict(deploy.load(bundle), raw).logits
    assert torch.equal(deploy.predict(model, raw).logits, expected)


def test_load_pruned_model_refuses_a_different_layer_count(checkpoint):
    """A class with 2 Linear layers for a 3-layer checkpoint is a clear error; it is left as is."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ValueError, match="has 2 Conv2d/BatchNorm/Linear layers but the "
                                         "checkpoint has 3"):
        deploy.load_pruned_model(model, checkpoint)
    assert model[1].weight.shape == (32, 784)


def test_load_pruned_model_refuses_a_different_input_size(checkpoint):
    """A class whose first Linear takes 100 inputs cannot receive a 784-input checkpoint."""
    model = nn.Sequential(nn.Linear(100, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="takes 100 inputs but the checkpoint's first layer "
                                         "takes 784"):
        deploy.load_pruned_model(model, checkpoint)


def test_load_pruned_model_refuses_parameters_the_checkpoint_lacks(checkpoint):
    """Extra parameters (here a LayerNorm) would stay untrained: refused, not silently kept."""
    model = nn.Sequential(nn.Linear(784, 32), nn.LayerNorm(32), nn.Linear(32, 16),
                          nn.Linear(16, 10))
    with pytest.raises(ValueError, match="does not provide"):
        deploy.load_pruned_model(model, checkpoint)


# ---- the copied-alone case --------------------------------------------------------------------

def test_copied_deploy_folder_predicts_without_the_library(tmp_path, bundle):
    """iaprune_runtime/ copied next to a bundle, without iaprune and without Pillow, runs
    `python -m iaprune_runtime predict` on .npy inputs."""
    alone = tmp_path / "alone"
    shutil.copytree(DEPLOY_DIR, alone / "iaprune_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "bundle"))
    shutil.copytree(bundle, alone / "bundle")
    raw = images(3)
    np.save(alone / "digits.npy", raw)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    no_pillow = ("import runpy, sys; sys.modules['PIL'] = None; "  # import PIL fails
                 "sys.modules['iaprune'] = None; "  # and so does the library
                 "import iaprune_runtime, pathlib; "  # the copy, not an installed one
                 "here = pathlib.Path(iaprune_runtime.__file__).parent.parent; "
                 "assert here == pathlib.Path.cwd(); "
                 "sys.argv = ['deploy', 'predict', '--bundle', 'bundle', 'digits.npy']; "
                 "runpy.run_module('iaprune_runtime', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", no_pillow], cwd=alone, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (alone / "iaprune").exists()
    pred = deploy.predict(deploy.load(bundle), raw)
    expected = [f"digits.npy[{i}]: {label} (p={p:.4f})"
                for i, (label, p) in enumerate(zip(pred.labels.tolist(), pred.confidence.tolist(),
                                                   strict=True))]
    assert proc.stdout.splitlines() == expected


def _imports(tree: ast.AST) -> list[str]:
    """Top-level package names of the absolute imports anywhere under `tree`."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.append(node.module.split(".")[0])
    return roots


def test_deploy_imports_only_torch_numpy_and_the_standard_library():
    """No module of deploy/ imports src; at module level only torch, numpy and the standard
    library, so .npy inputs need nothing else; optional onnx/onnxruntime/Pillow only inside
    the functions that use them."""
    required = set(sys.stdlib_module_names) | {"torch", "numpy"}
    optional = {"onnx", "onnxruntime", "PIL"}
    for path in DEPLOY_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        module_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        assert set(_imports(ast.Module(module_level, []))) <= required, path.name
        assert set(_imports(tree)) <= required | optional, path.name


# ---- preprocessing ----------------------------------------------------------------------------

def test_raw_uint8_images_are_scaled_like_the_engines_data_loader(checkpoint):
    """predict on raw uint8 gives bit-identical logits to the evaluation's float32(raw) * scale."""
    model, raw = deploy.load(checkpoint), images(10)
    engine_x = torch.from_numpy(raw.reshape(10, -1).astype(np.float32) * (1 / 255))  # src/data.py
    assert torch.equal(deploy.predict(model, raw).logits, model(engine_x))


def test_single_and_batched_shapes_agree(checkpoint):
    """(28, 28), (1, 28, 28), (n, 28, 28), (n, 1, 28, 28) and (n, 784) all classify the same."""
    model, raw = deploy.load(checkpoint), images(4)
    batched = deploy.predict(model, raw).logits
    assert torch.equal(deploy.predict(model, raw[:, None]).logits, batched)
    assert torch.equal(deploy.predict(model, raw.reshape(4, 784)).logits, batched)
    # batch 1 vs batch 4 may round differently inside the matrix product
    torch.testing.assert_close(deploy.predict(model, raw[0]).logits, batched[:1])
    assert torch.equal(deploy.predict(model, raw[0]).logits, deploy.predict(model, raw[:1]).logits)


def test_float_inputs_are_taken_as_already_scaled(checkpoint):
    """Float images in [0, 1] are used as they are; the same images as uint8 get scaled."""
    model, raw = deploy.load(checkpoint), images(3)
    scaled = raw.astype(np.float32) * (1 / 255)
    assert torch.equal(deploy.predict(model, scaled).logits, deploy.predict(model, raw).logits)


def test_out_of_range_floats_are_refused(checkpoint):
    """Float inputs 0..255 (forgotten scaling) would be silently wrong: refused."""
    with pytest.raises(ValueError, match="outside the model's input range"):
        deploy.predict(deploy.load(checkpoint), images(2).astype(np.float32))


def test_wrong_shape_is_refused(checkpoint):
    """A 27x27 image does not fit a 784-input model."""
    with pytest.raises(ValueError, match=r"shape \[2, 27, 27\] do not fit"):
        deploy.predict(deploy.load(checkpoint), np.zeros((2, 27, 27), np.uint8))


def test_nan_inputs_are_refused(checkpoint):
    """NaN inputs are an error, not a prediction."""
    x = np.full((1, 784), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        preprocess(x, InputSpec())


def test_predict_needs_a_known_preprocessing():
    """A plain module without input_spec and no spec= is refused."""
    with pytest.raises(ValueError, match="no input preprocessing known"):
        deploy.predict(nn.Linear(784, 10), images(1))


# ---- refusals ---------------------------------------------------------------------------------

def test_tampered_model_file_is_refused(bundle):
    """A model.pth whose sha256 differs from the manifest's is refused by load."""
    path = bundle / "model.pth"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(deploy.BundleError, match="sha256 does not match"):
        deploy.load(bundle)


def test_replaced_model_file_is_refused_by_the_command_line(tmp_path, bundle, capsys):
    """predict on a bundle whose model.pth was swapped prints one `error:` line, exit code 2."""
    other = engine_checkpoint(tmp_path / "other.pth", [784, 20, 8, 10], seed=1)
    shutil.copy(other, bundle / "model.pth")
    np.save(tmp_path / "x.npy", images(1))
    assert run(main, ["predict", "--bundle", str(bundle), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sha256" in err and err.count("\n") == 1


def test_folder_without_manifest_is_not_a_bundle(tmp_path):
    """An ordinary folder is refused as not a bundle."""
    (tmp_path / "notes").mkdir()
    with pytest.raises(deploy.BundleError, match="not an IA-Prune bundle"):
        deploy.load(tmp_path / "notes")


def test_foreign_manifest_is_refused(tmp_path):
    """A manifest.json of some other tool is refused."""
    (tmp_path / "manifest.json").write_text('{"name": "something else"}')
    with pytest.raises(deploy.BundleError, match="not an IA-Prune bundle manifest"):
        deploy.load(tmp_path)


def test_pickled_objects_are_refused(tmp_path):
    """A .pth carrying arbitrary pickled objects is refused (weights_only=True)."""
    path = tmp_path / "evil.pth"
    torch.save({"format": "ia-prune/1", "payload": SimpleNN()}, path)
    with pytest.raises(deploy.BundleError, match="refused to load"):
        deploy.load(path)


def test_weights_that_do_not_fit_the_sizes_are_refused(tmp_path):
    """strict loading: a state_dict inconsistent with the recorded sizes is refused."""
    path = tmp_path / "m.pth"
    torch.save({"format": "ia-prune/1", "sizes": [784, 5, 10], "activation": "relu",
                "state_dict": mlp_net([784, 6, 10], seed=0).state_dict()}, path)
    with pytest.raises(deploy.BundleError, match="do not fit the recorded architecture"):
        deploy.load(path)


def test_a_non_checkpoint_file_never_suggests_unsafe_loading(tmp_path):
    """deploy.load of a text file says it is not a checkpoint, without torch's advice to retry
    with weights_only=False."""
    path = tmp_path / "README.md"
    path.write_text("# not a model\n")
    with pytest.raises(deploy.BundleError) as info:
        deploy.load(path)
    assert str(info.value) == f"{path}: not a PyTorch checkpoint (torch.load cannot read it)"


def test_pickled_objects_are_named_without_unsafe_advice(tmp_path):
    """A .pth with a pickled module names the refused class and gives no weights_only advice."""
    path = tmp_path / "evil.pth"
    torch.save({"format": "ia-prune/1", "payload": SimpleNN()}, path)
    with pytest.raises(deploy.BundleError, match="SimpleNN") as info:
        deploy.load(path)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_bundle_files_get_the_usual_permissions(tmp_path, checkpoint, umask):
    """model.pth and manifest.json are 0644 under umask 022 (not the temp file's 0600)."""
    umask(0o022)
    write_bundle(checkpoint, tmp_path / "b", onnx=False)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "b").iterdir()}
    assert modes == {"model.pth": 0o644, "manifest.json": 0o644}


def test_folders_given_for_files_say_they_are_folders(tmp_path, bundle, checkpoint, capsys):
    """bundle FOLDER and predict FOLDER say the path is a folder (pointing at a best_model.pth
    inside), not that it does not exist."""
    folder = checkpoint.parent
    assert run(main, ["bundle", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"error: {folder}: is a folder, not a checkpoint file "
                                       f"(did you mean {checkpoint}?)\n")
    assert run(main, ["predict", "--bundle", str(bundle), str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder, not a file\n"
    assert not (tmp_path / "o").exists()


def test_files_given_for_folders_say_they_are_files(tmp_path, checkpoint, capsys):
    """verify --bundle best_model.pth and bundle --recommended FILE are one line each, exit 2
    (verify used to end in a KeyError traceback)."""
    assert run(main, ["verify", "--bundle", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint}: is a file, not a bundle folder")
    assert err.count("\n") == 1
    assert run(main, ["bundle", "--recommended", str(checkpoint)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {checkpoint}: is a file, not a session")


def test_bundle_out_below_a_file_is_one_line_and_writes_nothing(tmp_path, checkpoint, capsys):
    """bundle --out DIR where DIR lies below an existing file: one line naming the file, exit 2
    (was a NotADirectoryError traceback)."""
    notes = tmp_path / "notes"
    notes.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(main, ["bundle", str(checkpoint), "--out", str(notes / "b"), "--no-onnx"]) == 2
    assert capsys.readouterr().err == f"error: {notes / 'b'}: {notes} is a file, not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before and notes.read_text() == "x"


def test_a_recommended_txt_that_is_not_text_is_named(tmp_path, capsys):
    """bundle --recommended with a binary recommended.txt names the file (the error was
    'utf-8' codec can't decode... without saying which file)."""
    results = tmp_path / "s" / "iterative_pruning" / "prune_w_retrain_results"
    results.mkdir(parents=True)
    (results / "recommended.txt").write_bytes(b"\xff\xfe\x00")
    argv = ["bundle", "--recommended", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    assert run(main, argv) == 2
    assert capsys.readouterr().err == f"error: {results / 'recommended.txt'}: not a text file\n"
    assert not (tmp_path / "o").exists()


def test_a_missing_bundle_names_both_accepted_kinds(tmp_path, capsys):
    """predict --bundle MISSING says neither a bundle folder nor a checkpoint file is there."""
    np.save(tmp_path / "x.npy", images(1))
    argv = ["predict", "--bundle", str(tmp_path / "nope"), str(tmp_path / "x.npy")]
    assert run(main, argv) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'nope'}: no such bundle folder or "
                                       f"checkpoint file\n")


# ---- ONNX -------------------------------------------------------------------------------------

def test_onnx_export_matches_torch(tmp_path, checkpoint):
    """With onnx and onnxruntime installed, model.onnx is written, checksummed and matches torch."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from iaprune_runtime.onnx_export import onnx_logits

    manifest = write_bundle(checkpoint, tmp_path / "b")
    data = (tmp_path / "b" / "model.onnx").read_bytes()
    assert manifest["onnx"]["sha256"] == hashlib.sha256(data).hexdigest()
    x = preprocess(images(50), InputSpec())
    torch.testing.assert_close(onnx_logits(data, x), deploy.load(tmp_path / "b")(x).detach(),
                               atol=1e-5, rtol=0)


def test_bundle_without_onnx_installed_says_why_and_leaves_no_stale_export(tmp_path, checkpoint,
                                                                          monkeypatch):
    """Without onnx/onnxruntime the bundle has no model.onnx (an old one is removed) and the
    manifest records why."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.onnx").write_bytes(b"old export")
    monkeypatch.setattr("iaprune_runtime.onnx_export.onnx_missing", lambda: "onnx not installed")
    manifest = write_bundle(checkpoint, tmp_path / "b")
    assert manifest["onnx"] == {"skipped": "onnx not installed"}
    assert not (tmp_path / "b" / "model.onnx").exists()


# ---- images (Pillow) --------------------------------------------------------------------------

def digit(seed: int = 0, size: int = 28) -> np.ndarray:
    """An MNIST-like (size, size) uint8 image: a bright ring on a dark, slightly noisy field."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    ring = np.abs(np.hypot(yy, xx * 1.4) - 0.28) < 0.07
    img = rng.integers(0, 20, (size, size))
    img[ring] = rng.integers(180, 256, int(ring.sum()))
    return img.astype(np.uint8)


def save_image(path: Path, pixels: np.ndarray, mode: str | None = None, **options) -> Path:
    """Write `pixels` with Pillow (converted to `mode` when given), format from the suffix."""
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path, **options)
    return path


def read(path: Path, spec: InputSpec | None = None, invert: bool | None = None) -> np.ndarray:
    """The raw sample deploy makes of an image file (asserting no note was needed)."""
    sample, note = read_inputs(path, spec or InputSpec(), invert)
    assert note is None, note
    return sample


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]  # (x0, y0, dx, dy) of the seven passes


def interlaced_png(gray: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit grayscale PNG (Pillow cannot write one): the test oracle."""
    data = bytearray()
    for x0, y0, dx, dy in ADAM7:
        sub = gray[y0::dy, x0::dx]
        if sub.size:
            for row in sub:
                data += b"\x00" + row.tobytes()  # filter type None
    header = struct.pack(">IIBBBBB", gray.shape[1], gray.shape[0], 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(bytes(data))) + _chunk(b"IEND", b""))


def test_grayscale_png_reads_as_its_pixels(tmp_path):
    """An 8-bit grayscale PNG becomes exactly its pixels, shaped (1, 28, 28) and uint8."""
    img = digit()
    got = read(save_image(tmp_path / "g.png", img))
    assert got.dtype == np.uint8 and got.shape == (1, 28, 28) and np.array_equal(got[0], img)


def test_rgb_png_reads_as_its_luma(tmp_path):
    """An RGB PNG becomes its ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B, rounded."""
    rgb = np.stack([digit(1), digit(2), digit(3)], axis=-1)
    luma = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    assert np.array_equal(read(save_image(tmp_path / "c.png", rgb))[0], luma)


def test_rgba_png_composites_light_strokes_over_black(tmp_path):
    """An RGBA PNG whose light strokes are opaque and whose background is transparent reads as
    those strokes on black, MNIST's background."""
    img = digit()
    ring = img > 100
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = img[..., None]
    rgba[..., 3] = np.where(ring, 255, 0)
    assert np.array_equal(read(save_image(tmp_path / "a.png", rgba))[0], np.where(ring, img, 0))


def test_interlaced_png_reads_like_the_plain_one(tmp_path):
    """An Adam7-interlaced PNG (refused by the old hand-written decoder) reads as its pixels."""
    img = digit(size=28)
    (tmp_path / "i.png").write_bytes(interlaced_png(img))
    assert Image.open(tmp_path / "i.png").info.get("interlace") == 1
    assert np.array_equal(read(tmp_path / "i.png")[0], img)


def test_jpeg_reads_close_to_its_pixels(tmp_path):
    """A JPEG (lossy) reads within JPEG's error of the original."""
    img = digit()
    got = read(save_image(tmp_path / "d.jpg", img, quality=95))[0]
    assert np.abs(got.astype(int) - img.astype(int)).mean() < 3


@pytest.mark.parametrize("suffix, mode", [(".bmp", None), (".gif", "P"), (".tiff", None),
                                          (".webp", None), (".png", "P"), (".png", "1")])
def test_other_formats_and_modes_read_as_their_pixels(tmp_path, suffix, mode):
    """BMP, GIF, TIFF, lossless WebP, palette and 1-bit PNGs read as the pixels Pillow decodes."""
    img = digit() if mode != "1" else np.where(digit() > 100, 255, 0).astype(np.uint8)
    options = {"lossless": True} if suffix == ".webp" else {}
    path = save_image(tmp_path / f"x{suffix}", img, mode, **options)
    expected = np.asarray(Image.open(path).convert("L"))
    assert np.array_equal(read(path)[0], expected)
    if mode is None:
        assert np.array_equal(expected, img)


def test_16_bit_png_keeps_its_high_byte(tmp_path):
    """16-bit grayscale keeps the high byte (Pillow's own 8-bit conversion would clip at 255)."""
    img16 = digit().astype(np.uint16) * 257 + 100
    assert np.array_equal(read(save_image(tmp_path / "w.png", img16))[0], (img16 >> 8))


def test_dark_on_light_image_is_inverted_with_a_note(tmp_path):
    """A dark digit on white paper reads as MNIST's light digit on black, and says so."""
    img = digit()
    path = save_image(tmp_path / "paper.png", 255 - img)
    sample, note = read_inputs(path, InputSpec())
    assert np.array_equal(sample[0], img)
    assert note is not None and "light background" in note and "--no-invert" in note


def test_invert_flags_force_either_way(tmp_path):
    """invert=False keeps a light-background image as it is; invert=True inverts a dark one."""
    img = digit()
    paper = save_image(tmp_path / "paper.png", 255 - img)
    assert np.array_equal(read(paper, invert=False)[0], 255 - img)
    assert np.array_equal(read(save_image(tmp_path / "d.png", img), invert=True)[0], 255 - img)


def test_black_digit_on_a_transparent_canvas_reads_as_light_on_black(tmp_path):
    """A black stroke drawn on a transparent canvas (a drawing app's export) is seen against
    white, then inverted: the light-on-black digit, not an all-black image."""
    ring = digit() > 100
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = np.where(ring, 255, 0)
    sample, note = read_inputs(save_image(tmp_path / "t.png", rgba), InputSpec())
    assert np.array_equal(sample[0], np.where(ring, 255, 0)) and "light background" in note


def test_colour_and_alpha_become_grayscale():
    """Equal RGB channels keep their value; transparency shows black behind a light drawing and
    white behind a dark one."""
    light = np.array([[[200, 200, 200, 255], [9, 80, 30, 0]]], np.uint8)
    dark = np.array([[[40, 40, 40, 255], [9, 80, 30, 0]]], np.uint8)
    assert to_gray(light).tolist() == [[200, 0]] and to_gray(dark).tolist() == [[40, 255]]


def test_large_image_is_area_resized_to_28x28(tmp_path):
    """A 56x56 image becomes the 2x2-block mean 28x28 image the model expects."""
    big = np.kron(digit(), np.ones((2, 2), np.uint8)) + np.random.default_rng(1).integers(
        0, 8, (56, 56)).astype(np.uint8)
    expected = np.rint(big.reshape(28, 2, 28, 2).astype(np.float64).mean((1, 3))).astype(np.uint8)
    got = read(save_image(tmp_path / "big.png", big))
    assert got.shape == (1, 28, 28) and np.abs(got[0].astype(int) - expected).max() <= 1


def test_image_for_a_model_not_scaled_by_1_255_is_given_in_its_range(tmp_path):
    """For digits' 8x8 inputs (raw 0..16, scale 1/16) an image comes as floats in [0, 1], so
    predict does not mistake 0..255 pixels for raw 0..16 values."""
    spec = InputSpec(shape=(1, 8, 8), scale=1 / 16, dtype="float32")
    img = digit(size=8)
    got = read(save_image(tmp_path / "s.png", img), spec)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[0], img / 255, atol=1e-7)
    assert preprocess(got, spec).max() <= 1


def test_a_file_pillow_cannot_read_is_one_line(tmp_path, bundle, capsys):
    """A file that is neither .npy nor an image is an `error:` line naming it, exit code 2."""
    (tmp_path / "notes.txt").write_text("not an image")
    assert run(main, ["predict", "--bundle", str(bundle), str(tmp_path / "notes.txt")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'notes.txt'}: not an image Pillow "
                                       f"can read, nor a .npy array\n")


def test_without_pillow_an_image_says_pip_install_pillow_and_npy_still_works(
        tmp_path, bundle, capsys, monkeypatch):
    """With Pillow missing an image input is one line naming `pip install pillow`; .npy inputs
    need only numpy and still predict."""
    png = save_image(tmp_path / "a.png", digit())
    np.save(tmp_path / "b.npy", digit())
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now raises ImportError
    assert run(main, ["predict", "--bundle", str(bundle), str(png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {png}: ") and err.count("\n") == 1
    assert "pip install pillow" in err
    assert run(main, ["predict", "--bundle", str(bundle), str(tmp_path / "b.npy")]) == 0


# ---- command line -----------------------------------------------------------------------------

def test_predict_command_prints_class_and_probability_per_input(tmp_path, bundle, capsys):
    """predict takes .png and .npy files and prints `FILE: class (p=...)` for each sample."""
    raw = np.stack([digit(0), images(1)[0]])
    save_image(tmp_path / "a.png", raw[0])
    np.save(tmp_path / "b.npy", raw[1])
    assert main(["predict", "--bundle", str(bundle), str(tmp_path / "a.png"),
                 str(tmp_path / "b.npy")]) == 0
    pred = deploy.predict(deploy.load(bundle), raw)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / name}: {label} (p={p:.4f})" for name, label, p in
                     zip(["a.png", "b.npy"], pred.labels.tolist(), pred.confidence.tolist(),
                         strict=True)]


def test_predict_names_what_the_command_line_offers_for_out_of_range_values(tmp_path, bundle,
                                                                           capsys):
    """A float .npy of 0..255 pixels is refused with advice the command line can follow (an
    integer .npy, or values divided by 255), not the Python API's raw=True/False."""
    np.save(tmp_path / "f.npy", images(1).astype(np.float64))
    assert run(main, ["predict", "--bundle", str(bundle), str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'f.npy'}: inputs taken as already scaled span")
    assert "integer .npy" in err and "divide by 255" in err and "raw=" not in err
    assert err.count("\n") == 1


def test_predict_inverts_a_dark_on_light_image_and_notes_it(tmp_path, bundle, capsys):
    """predict classifies a dark-on-light image as its light-on-dark version, with a note on
    stderr; --no-invert keeps the image as it is."""
    light_on_dark = save_image(tmp_path / "mnist_like.png", digit())
    dark_on_light = save_image(tmp_path / "paper.png", 255 - digit())
    assert main(["predict", "--bundle", str(bundle), str(light_on_dark), str(dark_on_light)]) == 0
    captured = capsys.readouterr()
    first, second = (line.split(": ", 1)[1] for line in captured.out.splitlines())
    assert first == second
    assert captured.err == (f"note: {dark_on_light}: light background, so the image was inverted "
                            f"to a light drawing on black as in training (--no-invert keeps it as "
                            f"it is)\n")
    assert main(["predict", "--bundle", str(bundle), "--no-invert", str(dark_on_light)]) == 0
    assert capsys.readouterr().err == ""


def make_session(root: Path, checkpoint: Path, modes=("iterative_pruning",)) -> Path:
    """A session folder whose recommended.txt names a checkpoint relative to `root`."""
    session = root / "sessions" / "s1"
    for mode in modes:
        target = session / mode / "3" / "prune_w_retrain" / "best_model.pth"
        target.parent.mkdir(parents=True)
        shutil.copy(checkpoint, target)
        rec = session / mode / "prune_w_retrain_results" / "recommended.txt"
        rec.parent.mkdir(parents=True)
        rec.write_text(f"{target.relative_to(root)}\n")
    return session


def test_recommended_checkpoint_is_found_from_a_session_or_mode_folder(tmp_path, checkpoint):
    """recommended.txt (relative to the repo root) is resolved from a session or mode folder."""
    session = make_session(tmp_path, checkpoint)
    expected = session / "iterative_pruning" / "3" / "prune_w_retrain" / "best_model.pth"
    assert find_recommended(session).resolve() == expected.resolve()
    assert find_recommended(session / "iterative_pruning").resolve() == expected.resolve()


def finished_session(root: Path, checkpoint: Path) -> Path:
    """A session whose recommended.txt the engine's own concatenate step wrote."""
    mode = root / "iterative_pruning"
    for i, (val, params) in enumerate([(98.0, 900), (97.5, 400)]):
        folder = mode / str(i) / "prune_w_retrain"
        folder.mkdir(parents=True)
        shutil.copy(checkpoint, folder / "best_model.pth")
        write_validation_results(folder / "validation_results.txt", {
            "Train_Loss": 0.1, "Test_Loss": 0.1, "Train_Accuracy": 99.0, "Test_Accuracy": val,
            "PercentageRetain": 100.0 / (i + 1), "Val_Loss": 0.1, "Val_Accuracy": val,
            "NoRetrain_Test_Accuracy": val, "Hidden": f"{20 - i}-8", "Params": params,
            "MACs": params})
    concatenate(mode, quiet=True)
    return root


@pytest.mark.parametrize("original", ["renamed", "kept"])
def test_copied_session_bundles_its_own_recommended_model(tmp_path, checkpoint, original):
    """A copy of a finished session names its own model, whether the original was renamed
    away or is still there (then the copy must not silently bundle the original's)."""
    source = finished_session(tmp_path / "sessions" / "s1", checkpoint)
    copy = Path(shutil.copytree(source, tmp_path / "archive" / "s1"))
    if original == "renamed":
        source.rename(tmp_path / "sessions" / "old")
    expected = copy / "iterative_pruning" / "1" / "prune_w_retrain" / "best_model.pth"
    assert find_recommended(copy).resolve() == expected.resolve()
    assert main(["bundle", "--recommended", str(copy), "--out", str(tmp_path / "b"),
                 "--no-onnx"]) == 0


def test_old_absolute_recommendation_still_works(tmp_path, checkpoint):
    """recommended.txt of an older version (an absolute path) is read as written when it
    exists, and as the same iteration of the copy when the session was copied."""
    session = make_session(tmp_path, checkpoint)
    target = session / "iterative_pruning" / "3" / "prune_w_retrain" / "best_model.pth"
    rec = session / "iterative_pruning" / "prune_w_retrain_results" / "recommended.txt"
    rec.write_text(f"{target.resolve()}\n")
    assert find_recommended(session) == target.resolve()
    copy = Path(shutil.copytree(session, tmp_path / "copy"))
    assert find_recommended(copy).resolve() == \
        (copy / "iterative_pruning/3/prune_w_retrain/best_model.pth").resolve()
    elsewhere = engine_checkpoint(tmp_path / "chosen.pth", [784, 12, 8, 10])
    rec.write_text(f"{elsewhere}\n")  # a hand-written path outside the session's layout
    assert find_recommended(session) == elsewhere


def test_two_recommendations_need_a_mode(tmp_path, checkpoint):
    """With both modes finished, --mode must choose one."""
    session = make_session(tmp_path, checkpoint, ("iterative_pruning", "one_shot_pruning"))
    with pytest.raises(ValueError, match="--mode"):
        find_recommended(session)
    assert find_recommended(session, "one_shot_pruning").parts[-4] == "one_shot_pruning"


def test_missing_recommendation_is_reported(tmp_path):
    """A session without recommended.txt names the file it looked for."""
    with pytest.raises(FileNotFoundError, match="recommended.txt"):
        find_recommended(tmp_path)


def test_bundle_command_uses_a_sessions_recommendation(tmp_path, checkpoint, capsys):
    """`bundle --recommended SESSION --out DIR` bundles the recommended checkpoint."""
    session = make_session(tmp_path, checkpoint)
    out = tmp_path / "out"
    assert main(["bundle", "--recommended", str(session), "--out", str(out), "--no-onnx"]) == 0
    assert deploy.load(out).sizes == [784, 20, 8, 10]
    assert "skipped" in capsys.readouterr().out and not (out / "model.onnx").exists()


def test_bundle_command_needs_exactly_one_source(tmp_path, checkpoint):
    """Both a CHECKPOINT and --recommended is a usage error (exit 2)."""
    assert run(main, ["bundle", str(checkpoint), "--recommended", str(tmp_path)]) == 2


def test_verify_without_data_files_names_the_data_root(tmp_path, bundle, capsys):
    """verify with no MNIST files under --data-root fails with a hint, exit code 2."""
    assert run(main, ["verify", "--bundle", str(bundle), "--data-root", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_idx_reader_refuses_truncated_files():
    """An IDX payload shorter than its header says is refused."""
    payload = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 28, 28) + bytes(100)
    with pytest.raises(ValueError, match="does not match its header"):
        parse_idx(payload, "x")


# ---- every spec layer type: the twin of iaprune.spec.build, CNNs, input selection ---------------

DIGITS_INPUT = {"shape": [1, 8, 8], "scale": 1 / 16, "flatten": True, "dtype": "float32",
                "range": [0.0, 1.0]}


def spec_named(name: str) -> dict:
    """The specs the twin is checked on: the presets, one with every other layer type, a select."""
    if name == "mlp":
        return src_spec.mlp([1, 28, 28], 10)
    if name == "lenet5":
        return src_spec.lenet5([1, 28, 28], 10)
    if name == "cnn3":
        return src_spec.cnn3([1, 8, 8], 10)
    if name == "mixed":  # batchnorm 2-D and 1-D, tanh, avgpool, dropout, sigmoid, no-bias linear
        layers = [{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, "batchnorm", "tanh",
                  {"type": "avgpool2d", "kernel": 2}, "flatten", {"type": "dropout", "p": 0.25},
                  {"type": "linear", "out": 12, "bias": False}, "batchnorm", "sigmoid",
                  {"type": "linear", "out": 10}]
        return src_spec.check_spec({"input": [1, 8, 8], "layers": layers})
    if name == "select":  # input pruning: 112 of 784 pixels read
        layers = [{"type": "select", "indices": list(range(0, 784, 7))},
                  {"type": "linear", "out": 20}, "relu", {"type": "linear", "out": 8}, "relu",
                  {"type": "linear", "out": 10}]
        return src_spec.check_spec({"input": [1, 28, 28], "layers": layers})
    if name == "leaky":  # leaky_relu after a conv and after a linear
        layers = [{"type": "conv2d", "out": 3, "kernel": 3}, {"type": "leaky_relu", "slope": 0.2},
                  "flatten", {"type": "linear", "out": 12}, "leaky_relu",
                  {"type": "linear", "out": 10}]
        return src_spec.check_spec({"input": [1, 8, 8], "layers": layers})
    if name == "graph":  # a residual add and a channel concatenation
        layers = [{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, "batchnorm",
                  {"type": "relu", "name": "stem"},
                  {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, {"type": "batchnorm",
                                                                           "name": "branch"},
                  {"type": "add", "inputs": ["stem", "branch"]}, {"type": "relu", "name": "sum"},
                  {"type": "conv2d", "out": 2, "kernel": 1, "name": "side"},
                  {"type": "concat", "inputs": ["sum", "side"]}, {"type": "maxpool2d", "kernel": 2},
                  "flatten", {"type": "linear", "out": 10}]
        return src_spec.check_spec({"input": [1, 8, 8], "layers": layers})
    if name == "smooth":  # gelu, silu, elu, dropout2d, padded max pool, adaptive pooling, softmax
        layers = [{"type": "conv2d", "out": 4, "kernel": 3}, "gelu", "dropout2d",
                  {"type": "maxpool2d", "kernel": 3, "stride": 2, "padding": 1},
                  {"type": "conv2d", "out": 5, "kernel": 2}, "silu", "adaptive_avgpool2d",
                  "flatten", {"type": "linear", "out": 12}, "elu", {"type": "linear", "out": 10},
                  "softmax"]
        return src_spec.check_spec({"input": [1, 8, 8], "layers": layers})
    if name == "global":  # relu6, padded avg pool, global average pooling, log_softmax
        layers = [{"type": "conv2d", "out": 4, "kernel": 3}, "relu6",
                  {"type": "avgpool2d", "kernel": 2, "stride": 1, "padding": 1},
                  "global_avgpool", {"type": "linear", "out": 10}, "log_softmax"]
        return src_spec.check_spec({"input": [1, 8, 8], "layers": layers})
    raise KeyError(name)


SPEC_NAMES = ["mlp", "lenet5", "cnn3", "mixed", "select", "leaky", "smooth", "global", "graph"]


def with_batchnorm_stats(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm random running statistics and affine values (not the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model


def spec_checkpoint(path: Path, spec: dict, seed: int = 0, **overrides) -> Path:
    """A best_model.pth of `spec` written by the engine's save_checkpoint (untrained)."""
    digits = spec["input"] == [1, 8, 8]
    meta = dict(dataset="digits" if digits else "mnist", input=DIGITS_INPUT if digits
                else MNIST_INPUT, classes=[str(d) for d in range(10)], iteration=0,
                metrics=METRICS)
    meta.update(overrides)
    model = with_batchnorm_stats(src_spec.build(spec, seed=seed))
    return save_checkpoint(path, model, **meta)


def raw_inputs(spec: dict, n: int, seed: int = 0) -> np.ndarray:
    """Raw uint8 inputs for a spec: digits-like 0..16 for 8x8, MNIST-like 0..255 for 28x28."""
    high = 17 if spec["input"] == [1, 8, 8] else 256
    return np.random.default_rng(seed).integers(0, high, (n, *spec["input"][1:]), dtype=np.uint8)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_deploy_twin_builds_what_src_builds(name):
    """DeployedNet and build() agree: module types, state_dict keys and shapes, the filled
    spec, and (with the same weights) outputs on flat and image-shaped inputs."""
    spec = spec_named(name)
    net = with_batchnorm_stats(src_spec.build(spec, seed=0)).eval()
    twin = deploy.DeployedNet(spec)
    assert [type(m).__name__ for m in twin] == [type(m).__name__ for m in net]
    assert ({k: v.shape for k, v in twin.state_dict().items()}
            == {k: v.shape for k, v in net.state_dict().items()})
    assert twin.spec == src_spec.check_spec(spec) and twin.flat_input == net.flat_input
    twin.load_state_dict(net.state_dict(), strict=True)
    twin.eval()
    x = torch.rand(5, *spec["input"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(twin(x), net(x))
    assert torch.equal(twin(x.reshape(5, -1)), net(x.reshape(5, -1)))
    with torch.inference_mode():  # the inference path (max pools by slices) of both
        assert torch.equal(twin(x), net(x))
    assert twin.inference_batch == inference_batch(net)  # verify evaluates as the engine does


def test_the_twin_specs_cover_every_registered_layer_type():
    """The specs the runtime is checked on (build, bundle, MACs, ONNX) hold every layer type of
    the registry, so a new layer type is tested through the runtime too."""
    from iaprune_runtime import layers

    covered = {layer["type"] for name in SPEC_NAMES for layer in spec_named(name)["layers"]}
    assert covered == set(layers.names())


@pytest.mark.parametrize("name", ["lenet5", "cnn3", "mixed", "select", "leaky", "smooth",
                                  "global", "graph"])
def test_spec_bundle_round_trip_gives_the_engines_outputs(tmp_path, name):
    """A CNN (or input-pruned) checkpoint bundles and loads, computing what src's model does."""
    spec = spec_named(name)
    path = spec_checkpoint(tmp_path / "best_model.pth", spec)
    write_bundle(path, tmp_path / "b", onnx=False)
    reference, _ = load_model(path)
    model = deploy.load(tmp_path / "b")
    x = torch.rand(6, *spec["input"])
    assert torch.equal(model(x), reference(x)) and not model.training


def test_cnn_manifest_records_spec_features_params_and_conv_macs(tmp_path):
    """The manifest of cnn3 on 1x8x8 has its spec, all 64 features read, no MLP sizes, the
    channels as hidden units, its params and MACs counted by hand."""
    spec = spec_named("cnn3")
    path = spec_checkpoint(tmp_path / "m.pth", spec)
    manifest = write_bundle(path, tmp_path / "b", onnx=False)
    assert manifest["spec"] == spec and manifest["input"] == DIGITS_INPUT
    assert manifest["features_read"] == 64 and manifest["sizes"] is None
    assert manifest["hidden"] == [2, 4, 8] and manifest["activation"] == "relu"
    assert manifest["params"] == (2 * 9 + 2) + (4 * 2 * 9 + 4) + (8 * 4 * 9 + 8) + 512 * 10 + 10
    # out positions * out channels * in channels * kh * kw per conv, in * out for the linear
    assert manifest["macs"] == 64 * 2 * 1 * 9 + 64 * 4 * 2 * 9 + 64 * 8 * 4 * 9 + 512 * 10
    assert json.loads((tmp_path / "b" / "manifest.json").read_text()) == manifest


def test_select_manifest_records_how_many_features_are_read(tmp_path):
    """An input-pruned MLP reads 112 of its 784 pixels: features_read 112, sizes from 112."""
    path = spec_checkpoint(tmp_path / "m.pth", spec_named("select"))
    manifest = write_bundle(path, tmp_path / "b", onnx=False)
    assert manifest["features_read"] == 112 and manifest["sizes"] == [112, 20, 8, 10]
    assert manifest["input"]["shape"] == [1, 28, 28]
    assert manifest["macs"] == 112 * 20 + 20 * 8 + 8 * 10


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_macs_agree_with_the_engines_layer_table(name):
    """iaprune_runtime's MAC count equals the engine's summary.txt total for every layer type."""
    spec = spec_named(name)
    assert count_macs(deploy.DeployedNet(spec)) == layer_table(src_spec.build(spec))[2]


def test_predict_classifies_raw_digits_with_a_cnn(tmp_path, capsys):
    """Raw uint8 8x8 digits are scaled by 1/16 and reshaped for the CNN, in Python and on the
    command line."""
    spec = spec_named("cnn3")
    path = spec_checkpoint(tmp_path / "m.pth", spec)
    model, raw = deploy.load(path), raw_inputs(spec, 4)
    x = torch.from_numpy(raw.reshape(4, -1).astype(np.float32) * (1 / 16))
    pred = deploy.predict(model, raw)
    assert torch.equal(pred.logits, model(x))
    np.save(tmp_path / "d.npy", raw)
    assert main(["predict", "--bundle", str(path), str(tmp_path / "d.npy")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path / 'd.npy'}[{i}]: {label} (p={p:.4f})"
        for i, (label, p) in enumerate(zip(pred.labels.tolist(), pred.confidence.tolist(),
                                           strict=True))]


@pytest.mark.parametrize("name", ["lenet5", "cnn3", "mixed", "select", "leaky", "smooth",
                                  "global", "graph"])
def test_onnx_export_matches_torch_for_every_layer_type(tmp_path, name):
    """model.onnx takes flat preprocessed inputs, like torch, and agrees with it for convs,
    pooling, batchnorm, dropout, sigmoid/tanh and select."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from iaprune_runtime.onnx_export import onnx_logits

    spec = spec_named(name)
    path = spec_checkpoint(tmp_path / "m.pth", spec)
    manifest = write_bundle(path, tmp_path / "b")
    assert manifest["onnx"]["max_abs_diff"] <= 1e-4
    model = deploy.load(tmp_path / "b")
    x = preprocess(raw_inputs(spec, 33), model.input_spec)
    assert x.shape == (33, math.prod(spec["input"]))
    torch.testing.assert_close(onnx_logits((tmp_path / "b" / "model.onnx").read_bytes(), x),
                               model(x).detach(), atol=1e-5, rtol=0)


def test_bundle_and_verify_commands_work_for_a_cnn(tmp_path, capsys):
    """`bundle` describes the CNN; `verify` checks its checksums (digits: no IDX test split)."""
    path = spec_checkpoint(tmp_path / "m.pth", spec_named("cnn3"))
    assert main(["bundle", str(path), "--out", str(tmp_path / "b"), "--no-onnx"]) == 0
    out = capsys.readouterr().out
    assert "conv2d 2 3 1 1, relu" in out and "29,312 MACs" in out
    assert main(["verify", "--bundle", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "sha256 ok" in out and "accuracy: not checked" in out


def test_deploy_verify_reads_digits_through_the_library(tmp_path, capsys):
    """`iaprune deploy verify` checks a digits bundle (the library reads digits for the runtime,
    which reads only the IDX sets); a wrong recorded accuracy is a MISMATCH."""
    from iaprune.deploy import entry

    data = load_dataset("digits")
    model = mlp_net([64, 16, 10], seed=0)
    accuracy = evaluate_split(model, data.test)[1]
    path = save_checkpoint(tmp_path / "m.pth", model, dataset="digits", input=data.input_info(),
                           val_size=len(data.val), split_seed=0,
                           metrics={"test_accuracy": accuracy})
    write_bundle(path, tmp_path / "b", onnx=False)
    assert entry(["verify", "--bundle", str(tmp_path / "b")]) == 0
    assert f"digits test split: accuracy {accuracy:.2f}% (" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["test_accuracy"] = accuracy + 1
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert entry(["verify", "--bundle", str(tmp_path / "b")]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_checkpoint_with_an_unknown_layer_type_is_refused(tmp_path):
    """A spec deploy cannot build is a BundleError naming the file, not a crash."""
    path = tmp_path / "m.pth"
    torch.save({"format": "ia-prune/2", "spec": [{"type": "lstm"}], "input": {"shape": [4]},
                "state_dict": {}}, path)
    with pytest.raises(deploy.BundleError, match=r"m\.pth: bad architecture .*'lstm'"):
        deploy.load(path)


def test_manifest_whose_spec_differs_from_model_pth_is_refused(tmp_path):
    """A manifest edited to describe another architecture no longer matches model.pth."""
    path = spec_checkpoint(tmp_path / "m.pth", spec_named("cnn3"))
    write_bundle(path, tmp_path / "b", onnx=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["spec"]["layers"][0]["kernel"] = 5
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(deploy.BundleError, match="architecture differs"):
        deploy.load(tmp_path / "b")


# ---- checkpoints and bundles of the previous version --------------------------------------------

def legacy_checkpoint(path: Path) -> Path:
    """An ia-prune/1 checkpoint as the previous version wrote it: sizes, activation, 0./2. keys."""
    gen = torch.Generator().manual_seed(0)
    state = {"0.weight": torch.randn(6, 784, generator=gen) / 28,
             "0.bias": torch.randn(6, generator=gen),
             "2.weight": torch.randn(10, 6, generator=gen),
             "2.bias": torch.randn(10, generator=gen)}
    torch.save({"format": "ia-prune/1", "sizes": [784, 6, 10], "activation": "tanh",
                "state_dict": state, "input": MNIST_INPUT, "dataset": "mnist",
                "metrics": METRICS}, path)
    return path


def test_ia_prune_1_checkpoint_loads_and_bundles(tmp_path):
    """A checkpoint of the previous format computes tanh(x W0' + b0) W2' + b2 and bundles."""
    path = legacy_checkpoint(tmp_path / "old.pth")
    state = torch.load(path, weights_only=True)["state_dict"]
    x = torch.rand(5, 784)
    expected = torch.tanh(x @ state["0.weight"].T + state["0.bias"]) @ state["2.weight"].T
    torch.testing.assert_close(deploy.load(path)(x), expected + state["2.bias"])
    manifest = write_bundle(path, tmp_path / "b", onnx=False)
    assert manifest["sizes"] == [784, 6, 10] and manifest["activation"] == "tanh"
    assert manifest["spec"]["input"] == [1, 28, 28]


def test_bundle_written_by_the_previous_version_still_loads(tmp_path):
    """An ia-prune-bundle/1 manifest (sizes and activation, no spec) loads; wrong sizes do not."""
    write_bundle(legacy_checkpoint(tmp_path / "old.pth"), tmp_path / "b", onnx=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for key in ("spec", "features_read"):
        del manifest[key]
    manifest["format"] = "ia-prune-bundle/1"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert deploy.load(tmp_path / "b").sizes == [784, 6, 10]
    manifest["sizes"] = [784, 7, 10]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(deploy.BundleError, match="architecture differs"):
        deploy.load(tmp_path / "b")


# ---- load_pruned_model: CNNs and input pruning -----------------------------------------------

class UserCNN(nn.Module):
    """A user's own small CNN for 1x8x8 digits (attributes, functional ReLU in forward)."""

    def __init__(self, c1: int = 6, c2: int = 8, kernel: int = 3, in_channels: int = 1,
                 affine: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, c1, kernel, padding=kernel // 2)
        self.bn1 = nn.BatchNorm2d(c1, affine=affine)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel, padding=kernel // 2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(F.relu(self.conv2(x))))


def user_cnn_spec(c1: int = 3, c2: int = 5) -> dict:
    """UserCNN's architecture as a spec, with fewer channels (as pruning would leave it)."""
    return src_spec.check_spec({"input": [1, 8, 8], "layers": [
        {"type": "conv2d", "out": c1, "kernel": 3, "padding": 1}, "batchnorm", "relu",
        {"type": "maxpool2d", "kernel": 2}, {"type": "conv2d", "out": c2, "kernel": 3,
                                             "padding": 1}, "relu", "flatten",
        {"type": "linear", "out": 10}]})


@pytest.fixture
def cnn_checkpoint(tmp_path) -> Path:
    return spec_checkpoint(tmp_path / "cnn.pth", user_cnn_spec())


def test_load_pruned_model_resizes_a_users_cnn(cnn_checkpoint):
    """UserCNN (6 and 8 channels) shrinks to the checkpoint's 3 and 5 channels, BatchNorm
    included, and computes what the deployed model computes."""
    model = deploy.load_pruned_model(UserCNN(), cnn_checkpoint)
    assert model.conv1.weight.shape == (3, 1, 3, 3) and model.bn1.running_mean.shape == (3,)
    assert (model.bn1.num_features, model.conv2.in_channels, model.conv2.out_channels) == (3, 3, 5)
    assert model.fc.weight.shape == (10, 80) and not model.training
    x = torch.rand(7, 1, 8, 8)
    assert torch.equal(model(x), deploy.load(cnn_checkpoint)(x))
    raw = raw_inputs(user_cnn_spec(), 3)
    assert torch.equal(deploy.predict(model, raw).logits,
                       deploy.predict(deploy.load(cnn_checkpoint), raw).logits)


@pytest.mark.parametrize(("user", "message"), [
    (lambda: UserCNN(kernel=5), "kernel_size"),
    (lambda: UserCNN(in_channels=3), "takes 3 inputs but the checkpoint's first layer takes 1"),
    (lambda: UserCNN(affine=False), "affine=True"),
    (lambda: SimpleNN(), "has 3 Conv2d/BatchNorm/Linear layers but the checkpoint has 4"),
    (lambda: nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm1d(6),
                           nn.Conv2d(6, 8, 3, padding=1), nn.Linear(128, 10)),
     "is a BatchNorm1d but the checkpoint's layer there is a BatchNorm2d"),
])
def test_load_pruned_model_refuses_a_cnn_that_does_not_fit(cnn_checkpoint, user, message):
    """Layer kind, kernel, input channels and BatchNorm settings must fit; a refused model is
    left exactly as it was."""
    model = user()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        deploy.load_pruned_model(model, cnn_checkpoint)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture
def select_checkpoint(tmp_path) -> Path:
    return spec_checkpoint(tmp_path / "select.pth", spec_named("select"))


class SelectingNN(SimpleNN):
    """SimpleNN whose forward applies the kept input indices, as load_pruned_model documents."""

    def forward(self, x):
        x = x.view(len(x), -1)[:, self.input_indices]
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def test_load_pruned_model_refuses_input_pruning_unless_told(select_checkpoint):
    """An input-pruned checkpoint into SimpleNN is a ValueError naming both choices; the model is
    left as it was."""
    model = SimpleNN()
    with pytest.raises(ValueError, match="reads 112 of its 784 input features.*inputs='indices'"):
        deploy.load_pruned_model(model, select_checkpoint)
    assert model.fc1.weight.shape == (256, 784) and not hasattr(model, "input_indices")


def test_load_pruned_model_attaches_the_kept_input_indices(select_checkpoint):
    """inputs='indices': fc1 reads the 112 kept features, model.input_indices names them, and a
    forward that applies them reproduces the deployed model."""
    model = deploy.load_pruned_model(SelectingNN(), select_checkpoint, inputs="indices")
    assert model.fc1.weight.shape == (20, 112)
    assert model.input_indices.tolist() == list(range(0, 784, 7))
    assert set(model.state_dict()) == {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    raw = images(9)
    assert torch.equal(deploy.predict(model, raw).logits,
                       deploy.predict(deploy.load(select_checkpoint), raw).logits)


def test_load_pruned_model_can_give_pruned_inputs_zero_weights(select_checkpoint):
    """inputs='zeros': SimpleNN keeps its 784-wide fc1 with zero columns for pruned pixels and,
    unchanged, computes the deployed model's outputs."""
    model = deploy.load_pruned_model(SimpleNN(), select_checkpoint, inputs="zeros")
    assert model.fc1.weight.shape == (20, 784)
    pruned = torch.ones(784, dtype=torch.bool)
    pruned[list(range(0, 784, 7))] = False
    assert torch.count_nonzero(model.fc1.weight[:, pruned]) == 0
    x = torch.rand(9, 1, 28, 28)
    torch.testing.assert_close(model(x), deploy.load(select_checkpoint)(x))


def test_load_pruned_model_names_the_valid_input_modes(select_checkpoint):
    """An unknown inputs= value is a ValueError listing the valid ones."""
    with pytest.raises(ValueError, match="'error', 'indices', 'zeros'"):
        deploy.load_pruned_model(SimpleNN(), select_checkpoint, inputs="drop")


# ---- real MNIST (skipped when the files are absent) ------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    for candidate in (os.environ.get("IAPRUNE_DATA"), "../shared/data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate), load_dataset("mnist", candidate)
    pytest.skip("MNIST files not found (set IAPRUNE_DATA)")


@pytest.mark.slow
@pytest.mark.realdata
def test_test_split_preprocessing_is_identical_to_the_engines(mnist):
    """The runtime's IDX reader + preprocess reproduce the engine's MNIST test tensors exactly."""
    root, data = mnist
    raw, labels = load_test_split("mnist", root)
    assert torch.equal(preprocess(raw, InputSpec()), data.test.x)
    assert torch.equal(torch.from_numpy(labels.astype(np.int64)), data.test.y)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("arch", ["mlp", "cnn3"])
def test_verify_confirms_the_recorded_accuracy_and_catches_a_wrong_one(tmp_path, mnist, capsys,
                                                                       arch):
    """verify re-evaluates the full test split: the engine's accuracy passes, 0.05 off fails
    (for an MLP and a CNN)."""
    root, data = mnist
    model = (mlp_net([784, 16, 10], seed=0) if arch == "mlp"
             else src_spec.build(src_spec.cnn3([1, 28, 28], 10), seed=0))
    accuracy = evaluate_split(model, data.test)[1]
    path = save_checkpoint(tmp_path / "m.pth", model, dataset="mnist", input=MNIST_INPUT,
                           metrics={"test_accuracy": accuracy})
    write_bundle(path, tmp_path / "b", onnx=False)
    assert main(["verify", "--bundle", str(tmp_path / "b"), "--data-root", str(root)]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["test_accuracy"] = accuracy + 0.05
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", "--bundle", str(tmp_path / "b"), "--data-root", str(root)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize(("kernel", "stride", "size"), [(2, 2, 24), (2, 2, 7), (3, 2, 9),
                                                        (3, 1, 6)])
def test_deploy_pools_by_slices_with_torchs_values(kernel, stride, size):
    """The runtime's inference max pool equals torch's (odd sizes, overlapping windows)."""
    from iaprune_runtime.model import max_pool

    pool = torch.nn.MaxPool2d(kernel, stride)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(max_pool(pool, x), pool(x))


# ---- hardening ---------------------------------------------------------------------------------


def test_rebundling_removes_a_killed_bundles_temp_files(checkpoint, bundle):
    """Temp files a killed bundle write left (.<name>.<8 hex>.tmp) go with the next bundle
    into that folder; other files stay."""
    leftover = bundle / ".model.pth.a1b2c3d4.tmp"
    leftover.write_bytes(b"half a model")
    notes = bundle / "notes.tmp"
    notes.write_text("mine")
    write_bundle(checkpoint, bundle, onnx=False)
    assert not leftover.exists() and notes.exists()


def nan_checkpoint(tmp_path: Path) -> Path:
    """An engine checkpoint with one NaN weight."""
    path = engine_checkpoint(tmp_path / "nan.pth", [784, 20, 8, 10])
    ckpt = torch.load(path, weights_only=True)
    next(iter(ckpt["state_dict"].values()))[0, 0] = float("nan")
    torch.save(ckpt, path)
    return path


def test_bundling_a_model_with_nan_weights_is_refused_and_writes_nothing(tmp_path, capsys):
    """`bundle --no-onnx` of a checkpoint with a NaN weight is one line saying so; no folder."""
    path = nan_checkpoint(tmp_path)
    assert run(main, ["bundle", str(path), "--out", str(tmp_path / "b"), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: non-finite weights") and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_predict_and_verify_refuse_a_bundle_whose_model_turned_nan(tmp_path, bundle, capsys):
    """A bundle whose model.pth has NaN weights (sha256 updated to match) is refused by
    predict and verify instead of printing p=nan."""
    data = nan_checkpoint(tmp_path).read_bytes()
    (bundle / "model.pth").write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", images(1))
    for argv in (["predict", str(tmp_path / "x.npy"), "--bundle", str(bundle)],
                 ["verify", "--bundle", str(bundle)]):
        assert run(main, argv) == 2
        assert "non-finite weights" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["scale", "mean", "std", "range"])
def test_non_finite_preprocessing_constants_are_refused(tmp_path, bundle, capsys, field):
    """A manifest whose input scale, mean, std or range holds NaN or inf is refused on load."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    bad = {"scale": float("nan"), "mean": [float("inf")] * 784, "std": [float("nan")] * 784,
           "range": [0.0, float("inf")]}
    manifest["input"] = {**manifest["input"], "mean": [0.0] * 784, "std": [1.0] * 784,
                         field: bad[field]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="non-finite preprocessing constant"):
        deploy.load(bundle)


@pytest.mark.parametrize("name", ["/etc/hostname", "../../../../etc/hostname", "sub/model.onnx",
                                  "..", "", 12345, None])
def test_an_onnx_file_outside_the_bundle_is_refused(tmp_path, bundle, capsys, name):
    """manifest onnx.file must name a file in the bundle folder: absolute paths, ../ escapes,
    subfolders and non-strings are one line, and nothing outside is read."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["onnx"] = {"file": name, "sha256": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert run(main, ["verify", "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {bundle / 'manifest.json'}: 'onnx.file' must name a file inside "
                   f"the bundle folder, got {name!r}\n")


@pytest.mark.parametrize(("key", "value"), [("sha256", None), ("sha256", 12), ("sha256", "abc"),
                                            ("onnx", [1]), ("test_accuracy", "97%"),
                                            ("test_accuracy", float("nan"))])
def test_manifest_fields_of_the_wrong_type_are_one_line(tmp_path, bundle, capsys, key, value):
    """sha256: null, a list for onnx, a string accuracy ... give one line naming the field."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[key] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert run(main, ["verify", "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bundle / 'manifest.json'}: '{key}' must be ") and \
        err.count("\n") == 1


def test_an_onnx_sha256_of_the_wrong_type_is_one_line(tmp_path, bundle, capsys):
    """onnx.sha256: null is one line naming the field."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["onnx"] = {"file": "model.onnx", "sha256": None}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert run(main, ["verify", "--bundle", str(bundle)]) == 2
    assert capsys.readouterr().err == (f"error: {bundle / 'manifest.json'}: 'onnx.sha256' must "
                                       "be a sha256 (64 hex digits), got None\n")
