"""Image-folder benchmark (issue 24): an image folder trains like the built-in dataset it was
written from, and its deployed model predicts the folder's own PNG files.

Usage: python benchmarks/image_folder.py [--out DIR] [--rows N] [--stream] [--only SESSION]

1. Fashion-MNIST's IDX files ($IAPRUNE_DATA/FashionMNIST/raw/) are written as a PNG folder,
   DIR/cache/image_folder/fashion-png/{train,test}/<i>_<class>/<n>.png (8-bit grayscale,
   lossless; class folders prefixed by the label so that their sorted order is the built-in's).
2. The default MLP workflow (784-256-64-10, every setting the default, seed 0) on the folder
   (validation split 5,000 as for the built-in) and on the built-in `fashion-mnist`: the base
   test accuracies (iteration 0) must agree within 0.3 points.
3. On the folder, the first N rows (default 6: the base and 5 prune steps) of the default
   schedule (retain/retain.txt, q = 0.8): the workflow runs through.
4. The recommended model of that session (the engine's recommendation, else the last) is
   bundled with `iaprune deploy bundle` and `iaprune deploy predict --no-invert` classifies
   every PNG of the test folder: its accuracy must equal the recorded test accuracy.
5. With --stream, the folder session once more with streaming forced (images read from disk in
   batches by DataLoader workers, PruneConfig(stream=True)): every complete iteration's
   validation_results.txt must equal the in-memory session's.

Every run is an ordinary engine session under DIR/cache/image_folder/, so an interrupted
benchmark continues where it stopped. Writes DIR/image_folder.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _setup import ROOT, markdown_table
from PIL import Image

from iaprune.concatenate import concatenate
from iaprune.config import PruneConfig, Training
from iaprune.data import SOURCES, data_root, load_idx
from iaprune.engine import Results, run
from iaprune.files import atomic_write
from iaprune.retain import geometric_schedule, write_schedule
from iaprune_runtime.images import has_light_background

AGREEMENT = 0.3  # points of base test accuracy, folder against built-in
HIDDEN = [256, 64]
VAL_SIZE = 5000  # the built-in's validation size


def class_folder(label: int) -> str:
    return f"{label}_{SOURCES['fashion-mnist'].classes[label].replace('/', '-')}"


def write_folder(root: Path) -> Path:
    """Fashion-MNIST as ROOT/train|test/<class>/<n>.png (skipped when already complete)."""
    done = root / "complete.txt"
    if done.exists():
        return root
    train_x, train_y, test_x, test_y = load_idx("fashion-mnist", data_root())
    for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
        for label in range(10):
            (root / split / class_folder(label)).mkdir(parents=True, exist_ok=True)
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image, mode="L").save(
                root / split / class_folder(int(label)) / f"{n:05d}.png")
    atomic_write(done, f"{len(train_x)} train, {len(test_x)} test images\n")
    return root


def session(config: PruneConfig, folder: Path, retain: Path) -> Results:
    return run(config, folder, retain=retain, quiet=True, log=lambda line: None)


def predict_folder(bundle: Path, test: Path) -> tuple[int, int, list[str]]:
    """(correct, total, commands) of `iaprune deploy predict --no-invert` over every PNG of the
    test folder, one command per class folder."""
    correct = total = 0
    commands = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        files = sorted(str(p) for p in folder.glob("*.png"))
        command = [sys.executable, "-m", "iaprune_runtime", "predict", "--bundle", str(bundle),
                   "--no-invert", *files]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        lines = out.strip().splitlines()
        assert len(lines) == len(files), (len(lines), len(files))
        expected = folder.name  # the bundle's class names are the folder names
        for line in lines:
            predicted = line.split(": ", 1)[1].rsplit(" (p=", 1)[0]
            correct += predicted == expected
            total += 1
        commands.append(f"iaprune deploy predict --bundle BUNDLE --no-invert "
                        f"{folder.name}/*.png")
    return correct, total, commands


def light_backgrounds(test: Path) -> int:
    """How many test PNGs `iaprune deploy predict` would invert without --no-invert."""
    return sum(has_light_background(np.asarray(Image.open(p)))
               for p in test.rglob("*.png"))


def same_validation_results(memory: Path, streamed: Path) -> tuple[int, int]:
    """(iterations whose validation_results.txt are equal, iterations complete in both)."""
    found = [(memory / p.relative_to(streamed), p) for p in
             sorted(streamed.glob("iterative_pruning/*/prune_w_retrain/validation_results.txt"))]
    pairs = [(a, b) for a, b in found if a.is_file()]
    return sum(a.read_text() == b.read_text() for a, b in pairs), len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rows", type=int, default=6,
                        help="rows of the default schedule run on the folder (base included)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epoch cap of base training, the same for both (default: the "
                             "workflow's default, until the validation accuracy plateaus)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the iterations the sessions have completed")
    parser.add_argument("--stream", action="store_true",
                        help="also run the folder session with streaming forced and compare "
                             "its validation results with the in-memory session's")
    parser.add_argument("--only", choices=("folder", "builtin", "stream"), default=None,
                        help="run only this session (to run both at once in two processes), "
                             "then stop; a later run without --only resumes both and reports")
    args = parser.parse_args()
    cache = args.out / "cache" / "image_folder"
    started = time.perf_counter()
    folder = write_folder(cache / "fashion-png")
    print(f"folder written ({time.perf_counter() - started:.0f} s)", flush=True)

    schedule = geometric_schedule(HIDDEN)
    base_only, shortened = cache / "retain_base.txt", cache / "retain_short.txt"
    write_schedule(schedule[:1], base_only)  # the built-in: the base model only
    write_schedule(schedule[:args.rows], shortened)

    training = Training(epochs=args.epochs)
    suffix = "" if args.epochs is None else f"-e{args.epochs}"
    timings = {}
    if args.only in (None, "folder") and not args.report_only:
        t = time.perf_counter()
        on_folder = session(PruneConfig(dataset=str(folder), val_size=VAL_SIZE,
                                        training=training), cache / f"folder{suffix}", shortened)
        timings["folder"] = time.perf_counter() - t
        print(f"folder session done ({timings['folder']:.0f} s)", flush=True)
    if args.only in (None, "builtin") and not args.report_only:
        t = time.perf_counter()
        builtin = session(PruneConfig(dataset="fashion-mnist", training=training),
                          cache / f"builtin{suffix}", base_only)
        timings["builtin"] = time.perf_counter() - t
        print(f"built-in session done ({timings['builtin']:.0f} s)", flush=True)
    if (args.only == "stream" or (args.stream and args.only is None)) and not args.report_only:
        t = time.perf_counter()
        session(PruneConfig(dataset=str(folder), val_size=VAL_SIZE, training=training,
                            stream=True), cache / f"folder-stream{suffix}", shortened)
        timings["stream"] = time.perf_counter() - t
        print(f"streamed folder session done ({timings['stream']:.0f} s)", flush=True)
    if args.only is not None:
        return
    cap = ("every setting the default" if args.epochs is None else
           f"every setting the default but base training capped at {args.epochs} epochs "
           "(--epochs, the same for both; the loaded machine left no time for the default "
           "plateau rule)")

    on_folder = concatenate(cache / f"folder{suffix}" / "iterative_pruning", quiet=True)
    builtin = concatenate(cache / f"builtin{suffix}" / "iterative_pruning", quiet=True)
    base_folder, base_builtin = on_folder.row(0), builtin.row(0)
    gap = base_folder["Test_Accuracy"] - base_builtin["Test_Accuracy"]
    agree = abs(gap) <= AGREEMENT
    base_table = markdown_table(
        ["data", "base val %", "base test %", "train / val / test samples"],
        [["image folder (PNG)", f"{base_folder['Val_Accuracy']:.2f}",
          f"{base_folder['Test_Accuracy']:.2f}", "55,000 / 5,000 / 10,000"],
         ["built-in fashion-mnist", f"{base_builtin['Val_Accuracy']:.2f}",
          f"{base_builtin['Test_Accuracy']:.2f}", "55,000 / 5,000 / 10,000"],
         ["difference (target: within ±0.3)", "", f"{gap:+.2f} ({'met' if agree else 'NOT met'})",
          ""]])
    rows_table = markdown_table(
        ["iteration", "hidden", "params", "val %", "test %", "test % before retraining"],
        [[r.iteration, r["Hidden"], r["Params"], f"{r['Val_Accuracy']:.2f}",
          f"{r['Test_Accuracy']:.2f}", f"{r['NoRetrain_Test_Accuracy']:.2f}"]
         for r in on_folder.rows])

    chosen = on_folder.recommended
    checkpoint = on_folder.recommended_path
    bundle = cache / "bundle"
    subprocess.run([sys.executable, "-m", "iaprune_runtime", "bundle", str(checkpoint),
                    "--out", str(bundle), "--no-onnx"], check=True, capture_output=True, text=True)
    correct, total, _ = predict_folder(bundle, folder / "test")
    deployed = 100.0 * correct / total
    recorded = on_folder.row(chosen)["Test_Accuracy"]
    same = abs(deployed - recorded) < 0.005
    deploy_table = markdown_table(
        ["model", "recorded test %", "iaprune deploy predict on the PNG files",
         "reproduced"],
        [[f"iteration {chosen} ({on_folder.row(chosen)['Hidden']}, "
          "recommended)", f"{recorded:.2f}", f"{deployed:.2f} ({correct} of {total})",
          "yes" if same else "NO"]])
    light = light_backgrounds(folder / "test")
    def epoch_seconds(session: Path) -> list[float]:
        table = session / "iterative_pruning" / "0" / "prune_w_retrain" / "train_results.txt"
        return [float(line.split()[-1]) for line in table.read_text().splitlines()[1:]]

    timed = {"the folder in memory": cache / f"folder{suffix}",
             "the built-in": cache / f"builtin{suffix}"}
    if args.stream:
        timed["the folder streamed"] = cache / f"folder-stream{suffix}"
    per_epoch = {label: epoch_seconds(path) for label, path in timed.items()}
    timing = ", ".join(f"{label} {np.median(s):.2f} s ({len(s)} epochs)"
                       for label, s in per_epoch.items())
    text = "\n\n".join([
        "Fashion-MNIST written as a PNG folder (train/ and test/, one folder per class), "
        f"trained with the default MLP workflow (784-256-64-10, seed 0, {cap}; the folder "
        "with --val-size 5000 as the built-in has), beside the built-in `fashion-mnist`:",
        base_table,
        f"The workflow on the folder, the first {args.rows} rows of the default schedule "
        f"(q = 0.8; {len(on_folder.rows)} of them complete when this file was written):",
        rows_table,
        deploy_table,
        f"`--no-invert`: {light} of the 10,000 test PNGs have a light border (the runtime's test: "
        "median border pixel), and `iaprune deploy predict` inverts such images unless told not to "
        "(it expects MNIST-like light drawings on black).",
        f"Median seconds per base-training epoch: {timing}, on this 2-core machine "
        "(the sessions may have run side by side: see --only).",
    ])
    if args.stream:
        equal, complete = same_validation_results(cache / f"folder{suffix}",
                                                  cache / f"folder-stream{suffix}")
        text += ("\n\nWith streaming forced (`PruneConfig(stream=True)`, the PNGs read from "
                 f"disk in batches): {equal} of {complete} iterations complete in both "
                 "sessions have the same validation_results.txt as in memory.")
    atomic_write(args.out / "image_folder.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
