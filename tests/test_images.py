"""Large images cost little: decoded reduced where the format allows (JPEG draft, reduce) and
refused above a pixel limit before decoding, in deploy predict and the image-folder reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from iaprune import build, save_checkpoint
from iaprune.data.dataset import DatasetError
from iaprune.data.images import read_folder
from iaprune_runtime.__main__ import main as deploy_main
from iaprune_runtime.__main__ import run as deploy_run
from iaprune_runtime.images import PIXELS_ENV, draft, load_pixels, read_image, resize, to_gray

HUGE = 9400  # a 9400x9400 single-colour PNG: ~100 KB on disk, 88 M pixels


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("L", (HUGE, HUGE), 30).save(path)
    return path


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.pth"
    net = build({"input": [1, 28, 28], "layers": [{"type": "linear", "out": 10}]}, seed=0)
    save_checkpoint(path, net, dataset="mnist")
    return path


def test_a_huge_png_is_refused_in_one_line_before_decoding(huge_png, mnist_model, capsys):
    """predict of a 9400x9400 PNG: `error: ...: 9400x9400 image, above the limit ...`."""
    code = deploy_run(deploy_main, ["predict", "--bundle", str(mnist_model), str(huge_png)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{HUGE}x{HUGE} image, above the limit of 16,777,216 pixels" in err
    assert "--max-pixels" in err


def test_a_huge_png_allowed_by_max_pixels_peaks_well_under_300_mb(huge_png, mnist_model):
    """With the limit raised the same PNG is read (reduced before any float copy): the peak
    resident memory grows by well under 300 MB (it grew by ~4.6 GB before)."""
    script = textwrap.dedent(f"""
        import resource
        from iaprune_runtime import load
        from iaprune_runtime.inputs import read_inputs
        model = load({str(mnist_model)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sample, _ = read_inputs({str(huge_png)!r}, model.input_spec, False, max_pixels=10**8)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024, int(sample.min()), int(sample.max()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    grown_mb, lo, hi = map(int, out)
    assert grown_mb < 200 and lo == hi == 30


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    """A 2400x2400 JPEG read for a 28x28 model is decoded at 1/8 scale (300x300), then
    box-averaged to 60x60 (at least twice 28); without a target size it is read in full."""
    path = tmp_path / "big.jpg"
    Image.new("L", (2400, 2400), 200).save(path, quality=95)
    with Image.open(path) as image:
        draft(image, (28, 28))
        assert image.size == (300, 300)
    assert load_pixels(path, (28, 28)).shape == (60, 60, 1)
    assert load_pixels(path).shape == (2400, 2400, 1)


def test_a_reduced_png_reads_as_the_full_decode_resized(tmp_path):
    """Box-averaging a 700x700 PNG first gives the same 28x28 pixels (±1) as the full image
    area-resized."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (700, 700), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    full = resize(to_gray(load_pixels(tmp_path / "big.png")), (28, 28))
    got, _ = read_image(tmp_path / "big.png", (28, 28), invert=False)
    assert np.abs(got.astype(int) - full.astype(int)).max() <= 1


def test_the_image_folder_reader_refuses_an_image_above_the_limit(tmp_path, monkeypatch):
    """A folder image above $IAPRUNE_MAX_PIXELS is a DatasetError naming it, read from its
    header only."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), 10 * i).save(tmp_path / cls / f"{i}.png")
    Image.new("L", (200, 100), 0).save(tmp_path / "b" / "wide.png")
    monkeypatch.setenv(PIXELS_ENV, "10000")
    with pytest.raises(DatasetError, match=r"wide\.png: 200x100 image, above the limit of "
                                           r"10,000 pixels"):
        read_folder(tmp_path)
    monkeypatch.setenv(PIXELS_ENV, "20000")
    assert read_folder(tmp_path, image_size=8).x_train.shape == (7, 1, 8, 8)
