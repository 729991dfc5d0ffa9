"""Hostile documents cost nothing: the spec, schedule, manifest and checkpoint readers, fed with
generated malformed documents (wrong types, huge or negative sizes, deep nesting, non-UTF-8
bytes, paths outside the bundle, NaN), end every case in a one-line error or a valid result,
inside a process whose address space is capped at 1 GB (RLIMIT_AS).

The cases run in a child process (this file run as a script) so that the cap applies to them
alone; the child prints how many cases each reader was given.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

CAP = 2**30  # RLIMIT_AS of the child: 1 GB of address space (torch imports within it)
EXAMPLES = 80  # hypothesis examples per reader


def test_hostile_documents_end_in_one_line_errors_under_a_1_gb_cap():
    """Every generated document gives a valid result or a one-line error, never a traceback or
    a crash, with the child's address space capped at 1 GB; each reader gets its cases."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))

    env = {**os.environ, "IAPRUNE_MAX_MEMORY": "0.5"}  # networks the cap can hold
    child = subprocess.run([sys.executable, __file__], capture_output=True, text=True,
                           preexec_fn=cap, env=env, timeout=600)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    counts = json.loads(child.stdout.strip().splitlines()[-1])
    for reader in ("spec", "schedule", "manifest", "checkpoint"):
        tried = counts[reader].get("valid", 0) + counts[reader].get("error", 0)
        assert tried >= EXAMPLES and counts[reader].get("error", 0) > 0, counts
    for reader in ("spec", "manifest", "checkpoint"):  # the valid path is exercised too
        assert counts[reader].get("valid", 0) > 0, counts


# ---- the child ---------------------------------------------------------------------------------

def run_cases() -> dict[str, Counter]:  # noqa: C901 (one strategy per reader, side by side)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == CAP, "run by the test, under the cap"
    import torch
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    import iaprune_runtime as deploy
    from iaprune import build, save_checkpoint
    from iaprune.checkpoint import load_model
    from iaprune.errors import UserError
    from iaprune.retain import read_schedule
    from iaprune.spec import read_spec
    from iaprune_runtime.__main__ import main as deploy_main
    from iaprune_runtime.__main__ import run as deploy_run
    from iaprune_runtime.budget import resource_problem
    from iaprune_runtime.images import ImageSupportMissing
    from iaprune_runtime.layers import names

    library_errors = (UserError, OSError)  # what the library's command lines print as one line
    runtime_errors = (ValueError, TypeError, OSError, ImageSupportMissing)  # the runtime's
    counts: dict[str, Counter] = {k: Counter() for k in ("spec", "schedule", "manifest",
                                                         "checkpoint")}

    def outcome(reader: str, call, allowed) -> None:
        try:
            call()
            counts[reader]["valid"] += 1
        except allowed as exc:
            assert "\n" not in str(exc).strip(), f"{reader}: a multi-line error: {exc!r}"[:500]
            counts[reader]["error"] += 1
        except (MemoryError, RuntimeError) as exc:
            if resource_problem(exc) is None:
                raise
            counts[reader]["error"] += 1

    folder = Path(tempfile.mkdtemp())
    once = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

    huge = st.sampled_from([0, -1, -(2**70), 3_000_000, 10**9, 10**11, 2**63, 10**30])
    sizes = st.one_of(st.integers(-3, 40), huge, st.floats(allow_nan=True), st.none(),
                      st.booleans(), st.text(max_size=3))
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
    json_value = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.text(max_size=6), c, max_size=4), max_leaves=12)
    fields = st.sampled_from(["out", "kernel", "stride", "padding", "bias", "p", "indices", "x"])
    layer = st.one_of(
        st.builds(lambda kind, f: {"type": kind, **f}, st.sampled_from([*names(), "nope"]),
                  st.dictionaries(fields, sizes | json_value, max_size=4)),
        st.builds(lambda n: {"type": "linear", "out": n}, sizes),
        st.sampled_from(["relu", "flatten", "tanh", "sigmoid"]), json_value)
    shapes = st.one_of(st.lists(sizes, min_size=1, max_size=3),
                       st.sampled_from([[64], [1, 8, 8], [2**40], [1, 10**6, 10**6]]),
                       json_value)
    chain = st.builds(lambda n, m, act: [{"type": "linear", "out": n}, act,
                                         {"type": "linear", "out": m}], sizes | huge,
                      st.integers(1, 12), st.sampled_from(["relu", "tanh"]))
    spec = st.one_of(st.fixed_dictionaries({"input": shapes, "layers": st.lists(layer, max_size=5)
                                            | chain}),
                     st.lists(layer, max_size=5), chain, json_value)

    def deep(depth: int) -> bytes:
        return ("[" * depth + "]" * depth).encode()

    nasty_bytes = st.one_of(st.binary(max_size=64), st.sampled_from([deep(1000), deep(200_000),
                                                                     b"\xff\xfe\x00[", b""]))

    def json_bytes(value) -> bytes:
        return json.dumps(value, allow_nan=True).encode()

    # ---- spec ----------------------------------------------------------------------------------
    @once
    @given(st.one_of(spec.map(json_bytes), nasty_bytes))
    @example(json_bytes({"input": [64], "layers": [{"type": "linear", "out": 5}, "relu",
                                                   {"type": "linear", "out": 10}]}))
    def spec_case(data: bytes) -> None:
        path = folder / "arch.json"
        path.write_bytes(data)
        outcome("spec", lambda: build(read_spec(path, [64])), library_errors)

    # ---- schedule ------------------------------------------------------------------------------
    token = st.one_of(st.integers(-5, 300).map(str), huge.map(str),
                      st.sampled_from(["nan", "inf", "1e9", "-0", "1.5", "x", "", "٣"]),
                      st.text(max_size=4))
    rows = st.lists(st.lists(token, min_size=1, max_size=5).map(" ".join), max_size=6)
    header = st.sampled_from(["Iteration h1NodesRetained h2NodesRetained perNodesRetained",
                              "Iteration inNodesRetained h1NodesRetained perNodesRetained",
                              "Iteration perNodesRetained", "x y"])

    @once
    @given(st.one_of(st.builds(lambda h, r: "\n".join([h, *r]).encode(), header, rows),
                     nasty_bytes))
    def schedule_case(data: bytes) -> None:
        path = folder / "retain.txt"
        path.write_bytes(data)
        outcome("schedule", lambda: read_schedule(path), library_errors)

    # ---- manifest ------------------------------------------------------------------------------
    model = build({"input": [64], "layers": [{"type": "linear", "out": 5}, "relu",
                                             {"type": "linear", "out": 10}]}, seed=0)
    save_checkpoint(folder / "good.pth", model, dataset="digits")
    bundle = folder / "bundle"
    deploy.write_bundle(folder / "good.pth", bundle, onnx=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    outside = ["/etc/hostname", "../../../../etc/hostname", "..", ".", "model.pth",
               "sub/model.pth", "C:\\x", "a\0b", ""]
    sha = st.one_of(st.just(manifest["sha256"]), st.text(max_size=70), st.none(), st.integers())
    onnx = st.one_of(st.none(), json_value, st.fixed_dictionaries(
        {"file": st.sampled_from(outside) | json_value, "sha256": sha}))
    inputs = st.one_of(json_value, st.fixed_dictionaries(
        {"shape": shapes, "scale": st.floats(allow_nan=True) | leaf, "range": json_value,
         "mean": json_value, "std": json_value}))
    changes = st.dictionaries(
        st.sampled_from([*manifest, "onnx", "input"]),
        st.one_of(json_value, sizes, onnx, inputs, spec, sha), max_size=4)

    @once
    @given(st.one_of(changes.map(lambda c: json_bytes({**manifest, **c})), nasty_bytes))
    @example(json_bytes(manifest))  # the valid path, whatever the draws
    def manifest_case(data: bytes) -> None:
        (bundle / "manifest.json").write_bytes(data)
        err = io.StringIO()
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = io.StringIO(), err
        try:
            code = deploy_run(deploy_main, ["verify", "--bundle", str(bundle)])
        finally:
            sys.stdout, sys.stderr = stdout, stderr
        assert code in (0, 2) and err.getvalue().count("\n") == (code == 2), err.getvalue()
        counts["manifest"]["valid" if code == 0 else "error"] += 1

    # ---- checkpoint ----------------------------------------------------------------------------
    good = torch.load(folder / "good.pth", weights_only=True)
    weights = good["state_dict"]
    state = st.one_of(
        st.just(weights), st.just({}), json_value,
        st.just({k: v.double() for k, v in weights.items()}),
        st.just({**weights, "0.weight": torch.full((5, 64), math.nan)}),
        st.just({**weights, "0.weight": torch.zeros(8, 64)}),
        st.just({**weights, "extra": torch.zeros(1)}),
        st.just({k: v for k, v in weights.items() if k != "2.bias"}))
    payload = st.fixed_dictionaries(
        {"format": st.sampled_from(["ia-prune/2", "ia-prune/1", "nope"]),
         "spec": st.one_of(st.just(good["spec"]), st.lists(layer, max_size=4), chain,
                           json_value),
         "input": st.one_of(st.just(good["input"]), inputs),
         "state_dict": state},
        optional={"sizes": st.lists(sizes, max_size=4) | json_value,
                  "activation": st.sampled_from(["relu", "nope"]) | json_value,
                  "dataset": json_value, "val_size": sizes, "split_seed": sizes})

    @once
    @given(payload)
    @example(good)  # the valid path, whatever the draws
    def checkpoint_case(value: dict) -> None:
        path = folder / "m.pth"
        buffer = io.BytesIO()
        torch.save(value, buffer)
        path.write_bytes(buffer.getvalue())
        outcome("checkpoint", lambda: deploy.load(path), runtime_errors)
        outcome("checkpoint", lambda: load_model(path), library_errors)

    for case in (spec_case, schedule_case, manifest_case, checkpoint_case):
        case()
    return counts


if __name__ == "__main__":
    print(json.dumps(run_cases()))
