"""Command line: python -m iaprune_runtime bundle | predict | verify (errors: one line, exit 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .budget import add_memory_flag, memory_limit, resource_problem
from .bundle import (
    MANIFEST,
    MODEL_FILE,
    MODES,
    ONNX_FILE,
    checked_file,
    find_recommended,
    load,
    write_bundle,
)
from .idx import DATASETS, ROOT_ENV, load_test_split
from .images import MAX_PIXELS, PIXELS_ENV, ImageSupportMissing
from .inputs import InputRangeError, InputSpec, predict, preprocess, read_inputs
from .model import describe
from .onnx_export import OnnxUnavailable, check_onnx, onnx_runner

DEFAULT_BUNDLE = "deploy/bundle"
ACCURACY_TOLERANCE = 0.01  # percentage points: 1 image in 10,000
EXIT_USAGE, EXIT_FAILED = 2, 1
PYTHON_OBJECT = "python object"  # the dataset recorded for data given to the library in Python


class OwnTestSplit(NamedTuple):
    """A test split the runtime cannot read itself (your own data), prepared by the library."""

    inputs: Any  # (n, n_features) float32 model inputs: a Tensor, or rows with .batches(size)
    labels: Any  # (n,) class indices in the bundle's class order
    note: str | None = None  # printed before the accuracy, e.g. the data differs from its record


# verify's hook for your own data: (dataset, bundle folder, manifest, --data-root) -> its test
# split; `iaprune deploy` passes the library's (iaprune.deploy.own_test_split)
OwnData = Callable[[str, Path, dict[str, Any], str | None], OwnTestSplit]


def cmd_bundle(args: argparse.Namespace) -> int:
    """Write a bundle from a checkpoint or from a session's recommendation."""
    if (args.checkpoint is None) == (args.recommended is None):
        raise ValueError("give either CHECKPOINT or --recommended SESSION_DIR")
    checkpoint = args.checkpoint or find_recommended(args.recommended, args.mode)
    manifest = write_bundle(checkpoint, args.out, onnx=not args.no_onnx)
    out = Path(args.out)
    acc = manifest["test_accuracy"]
    print(f"bundle {out}/ from {checkpoint}")
    sizes = manifest["sizes"]
    arch = (f"{'-'.join(map(str, sizes))} {manifest['activation']}" if sizes
            else describe(manifest["spec"]))
    print(f"  {MODEL_FILE}      {arch}, {manifest['params']:,} params, {manifest['macs']:,} MACs, "
          f"sha256 {manifest['sha256'][:12]}...")
    print(f"  manifest.json  iteration {manifest['iteration']}, test accuracy "
          f"{'unknown' if acc is None else f'{acc:.2f}%'}")
    onnx = manifest["onnx"]
    if "file" in onnx:
        print(f"  {ONNX_FILE}     matches torch (max |diff| {onnx['max_abs_diff']:.2g})")
    else:
        print(f"  {ONNX_FILE}     skipped: {onnx['skipped']}")
    return 0


def npy_advice(spec: InputSpec) -> str:
    """How the command line takes .npy values (it has no raw=True/False of its own)."""
    lo, hi = spec.range
    return (f"predict takes an integer .npy as raw values (multiplied by {spec.scale:.6g}) and a "
            f"float .npy as values already scaled to [{lo:g}, {hi:g}]: save raw pixels as "
            f"integers (e.g. arr.astype('uint8')) or divide by {1 / spec.scale:.6g}")


def cmd_predict(args: argparse.Namespace) -> int:
    """Print one predicted class and its probability per input (notes go to stderr)."""
    model = load(args.bundle)
    for name in args.files:
        arr, note = read_inputs(name, model.input_spec, args.invert, model.inputs_read,
                                args.max_pixels)
        if note:
            print(f"note: {note}", file=sys.stderr)
        try:
            pred = predict(model, arr)
        except InputRangeError as exc:
            raise ValueError(f"{name}: {exc.found}; {npy_advice(model.input_spec)}") from None
        single = arr.size == model.input_spec.n_features
        for i, (label, p) in enumerate(zip(pred.labels.tolist(), pred.confidence.tolist(),
                                           strict=True)):
            print(f"{name if single else f'{name}[{i}]'}: {model.classes[label]} (p={p:.4f})")
    return 0


def input_batches(inputs: Any, size: int) -> Iterator[Any]:
    """Rows of `inputs` (an array or tensor, or rows read in batches by their own .batches)
    `size` at a time, in order."""
    if hasattr(inputs, "batches"):  # a streamed image folder's rows, read from disk
        yield from inputs.batches(size)
        return
    for start in range(0, len(inputs), size):
        yield inputs[start:start + size]


@torch.no_grad()
def evaluate(model: Any, inputs: Any, raw: bool | None, onnx_bytes: bytes | None
             ) -> tuple[torch.Tensor, float | str | None]:
    """(logits of every input, the ONNX check): the network runs on the inputs in the engine's
    evaluation batches, as predict runs it; the ONNX check is the largest |ONNX - torch| logit
    difference, the reason it could not run, or None without a model.onnx."""
    logits, onnx, run_onnx = [], None, None
    if onnx_bytes is not None:
        try:
            run_onnx, onnx = onnx_runner(onnx_bytes), 0.0  # one session for every batch
        except OnnxUnavailable as exc:
            onnx = str(exc)
    for rows in input_batches(inputs, model.inference_batch):
        logits.append(predict(model, rows, raw=raw).logits)
        if run_onnx is not None:
            onnx = max(onnx, check_onnx(run_onnx, model, preprocess(rows, model.input_spec, raw)))
    return torch.cat(logits), onnx


def not_checked(dataset: str | None, given: bool) -> str | None:
    """Why the runtime alone does not check the accuracy on `dataset`, or None when it reads it
    (`given`: named by --dataset)."""
    if dataset in DATASETS:
        return None
    if dataset is None:
        return "the bundle records no dataset; name one with --dataset"
    if dataset == PYTHON_OBJECT:
        return ("the model was trained on data given as a Python object; pass that data to "
                "iaprune.validator.evaluate from Python, or name a file with --dataset PATH")
    whose = "" if given else "the bundle's dataset "
    return (f"python -m iaprune_runtime reads {' and '.join(DATASETS)} itself; "
            f"`iaprune deploy verify` (with the IA-Prune library installed) checks {whose}"
            f"{dataset!r}")


@torch.no_grad()
def cmd_verify(args: argparse.Namespace) -> int:
    """Check the bundle's sha256 sums and re-evaluate it on the dataset's full test split: the
    runtime reads MNIST and Fashion-MNIST itself; your own data (a path) and the library's
    other built-in sets come from `args.own_data`, the library's hook, when it is given."""
    bundle = Path(args.bundle)
    if bundle.is_file() and bundle.name != MANIFEST:
        raise ValueError(f"{bundle}: is a file, not a bundle folder; verify checks a bundle "
                         f"(make one with: python -m iaprune_runtime bundle {bundle} --out FOLDER)")
    bundle = bundle.parent if bundle.is_file() else bundle
    model = load(bundle)  # refuses a model.pth whose sha256 differs from the manifest's
    manifest = model.info
    print(f"{bundle / MODEL_FILE}: sha256 ok ({manifest['sha256'][:12]}...)")
    onnx_entry = manifest.get("onnx") or {}
    onnx_bytes = None
    if "file" in onnx_entry:
        onnx_bytes = checked_file(bundle, onnx_entry["file"], onnx_entry["sha256"])
        print(f"{bundle / onnx_entry['file']}: sha256 ok")

    dataset = args.dataset or manifest.get("dataset")
    own_data: OwnData | None = getattr(args, "own_data", None)
    reason = not_checked(dataset, args.dataset is not None)
    if reason is not None and (own_data is None or dataset in (None, PYTHON_OBJECT)):
        print(f"accuracy: not checked ({reason})")
        return 0
    if reason is None:  # MNIST / Fashion-MNIST: raw uint8 images, scaled as in training
        inputs, labels = load_test_split(dataset, args.data_root)
        raw = None
    else:  # the library prepared them as the model's training data was: model inputs
        split = own_data(dataset, bundle, manifest, args.data_root)
        if split.note:
            print(f"note: {split.note}")
        inputs, labels, raw = split.inputs, np.asarray(split.labels), False
    logits, onnx = evaluate(model, inputs, raw, onnx_bytes)
    correct = int((logits.argmax(1) == torch.from_numpy(labels.astype(np.int64))).sum())
    accuracy = 100.0 * correct / len(labels)
    failed = False
    expected = manifest.get("test_accuracy")
    line = f"{dataset} test split: accuracy {accuracy:.2f}% ({correct}/{len(labels)})"
    if expected is None:
        print(f"{line}; the manifest records no test accuracy to compare")
    elif abs(accuracy - expected) <= ACCURACY_TOLERANCE + 1e-9:
        print(f"{line}, manifest {expected:.2f}%: ok")
    else:
        print(f"{line}, manifest {expected:.2f}%: MISMATCH (tolerance {ACCURACY_TOLERANCE})")
        failed = True
    if isinstance(onnx, float):
        print(f"{ONNX_FILE}: matches torch on the test split (max |diff| {onnx:.2g})")
    elif onnx is not None:
        print(f"{ONNX_FILE}: not run ({onnx})")
    print("verify: FAILED" if failed else "verify: ok")
    return EXIT_FAILED if failed else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bundle": cmd_bundle, "predict": cmd_predict, "verify": cmd_verify}


def parser() -> argparse.ArgumentParser:
    """The command-line parser with its three subcommands."""
    top = argparse.ArgumentParser(prog="python -m iaprune_runtime",
                                  description="Bundle an IA-Prune model and run it with torch "
                                  "alone.")
    sub = top.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="write a self-contained bundle from a best_model.pth")
    b.add_argument("checkpoint", nargs="?", help="path to a best_model.pth")
    b.add_argument("--recommended", metavar="SESSION_DIR",
                   help="use the checkpoint named in SESSION_DIR/<mode>/prune_w_retrain_results/"
                   "recommended.txt (or give a mode folder)")
    b.add_argument("--mode", choices=MODES, help="which mode's recommendation (when both exist)")
    b.add_argument("--out", default=DEFAULT_BUNDLE,
                   help=f"bundle folder (default {DEFAULT_BUNDLE})")
    b.add_argument("--no-onnx", action="store_true", help="do not write model.onnx")
    p = sub.add_parser("predict", help="classify .npy arrays, .csv tables and images (PNG, "
                       "JPEG, ...)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".npy (one sample or a batch), .csv with a header (a model trained on "
                   "a table reads its kept columns by name) or an image file (read with "
                   "Pillow; RGB for a model of colour images)")
    p.add_argument("--bundle", default=DEFAULT_BUNDLE,
                   help=f"bundle folder or best_model.pth (default {DEFAULT_BUNDLE})")
    polarity = p.add_mutually_exclusive_group()
    polarity.add_argument("--invert", action="store_true", default=None,
                          help="always invert images (default: invert those with a light "
                          "background, with a note)")
    polarity.add_argument("--no-invert", dest="invert", action="store_false",
                          help="never invert images")
    v = sub.add_parser("verify", help="check a bundle's checksums and re-evaluate its accuracy")
    v.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"default {DEFAULT_BUNDLE}")
    v.add_argument("--dataset", metavar="NAME_OR_PATH",
                   help=f"dataset to evaluate on (default: the bundle's): {', '.join(DATASETS)} "
                   "(read by the runtime), or digits or your own data's path (an image folder, "
                   ".npz, .csv, .parquet), e.g. when it moved (read by `iaprune deploy verify` "
                   "with the library)")
    v.add_argument("--data-root",
                   help=f"folder holding MNIST/raw/ (default ${ROOT_ENV}, else data/)")
    p.add_argument("--max-pixels", type=positive, metavar="N",
                   help=f"refuse larger images (default ${PIXELS_ENV}, else {MAX_PIXELS:,})")
    for command in (b, p, v):
        add_memory_flag(command)
    return top


def positive(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None, own_data: OwnData | None = None) -> int:
    """Run one subcommand; `own_data` is verify's hook for data the runtime does not read
    itself (see OwnData): the library passes it, the runtime alone has none."""
    args = parser().parse_args(argv)
    args.own_data = own_data
    with memory_limit(args.max_memory):
        return COMMANDS[args.command](args)


def run(entry: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `entry`; expected errors become `error: ...` on stderr and exit code 2."""
    try:
        return entry(argv)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
            ImageSupportMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the machine's state (no space, read-only), not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as exc:  # out of memory or stack: one line; else a bug
        problem = resource_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(run(main))
