"""A user's own project, outside the clone: their torch Dataset of RGB images and their own CNN
class, pruned through the Python API (the network given as a module, as architecture or as a
trained base model), and the result loaded back into their class."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iaprune import PruneConfig, Retraining, Training, run
from iaprune.errors import UserError

SCRIPT = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import Dataset

    from iaprune import (PruneConfig, Retraining, Training, load_model, load_pruned_model,
                         run)


    class Blobs(Dataset):
        """Random 3-channel 12x12 images; the class sets which channel holds a bright square."""

        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.y = torch.randint(0, 5, (n,), generator=g)
            self.x = torch.rand(n, 3, 12, 12, generator=g) * 0.3
            for i, label in enumerate(self.y.tolist()):
                r, c = torch.randint(0, 7, (2,), generator=g).tolist()
                self.x[i, label % 3, r:r + 5, c:c + 5] += 0.4 + 0.15 * label

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])


    class MyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.relu(self.conv2(x))
            return self.head(x.mean((2, 3)))


    data = Blobs(300, seed=0)
    config = PruneConfig(arch=MyCNN(), training=Training(epochs=4),
                         retraining=Retraining(epochs=1))
    results = run(config, "my_session", data=data, quiet=True, log=lambda line: None)
    mine = load_pruned_model(MyCNN(), results.recommended)
    pruned, _ = load_model(results.recommended)
    x = torch.stack([data[i][0] for i in range(8)])
    print(len(results.rows), float((mine(x) - pruned(x)).abs().max()))
''')


@pytest.mark.slow
def test_a_users_dataset_and_cnn_class_run_through_run_and_load_back(tmp_path):
    """Run from a folder outside the clone with the installed package: every schedule row is
    pruned and the recommended model, loaded into the user's class, computes what the pruned
    network computes."""
    (tmp_path / "my_prune.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    out = subprocess.run([sys.executable, "my_prune.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows, diff = out.stdout.split()
    assert int(rows) > 2 and float(diff) <= 1e-5
    assert (tmp_path / "my_session" / "arch.json").is_file()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def _config(**kwargs) -> PruneConfig:
    return PruneConfig(dataset="digits", training=Training(epochs=1),
                       retraining=Retraining(epochs=0), **kwargs)


def test_a_trained_module_is_the_base_model_and_resuming_needs_the_same_one(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    first = run(_config(base_model=model), tmp_path / "s", quiet=True, log=lambda line: None)
    assert first.rows[0]["Epochs"] == 0  # taken as it is, not trained
    assert (tmp_path / "s" / "base_model.pth").is_file()
    again = run(_config(base_model=model), tmp_path / "s", quiet=True, log=lambda line: None)
    assert again.resumed
    other = Tiny()
    with pytest.raises(UserError, match="another base model than the module given"):
        run(_config(base_model=other), tmp_path / "s", quiet=True, log=lambda line: None)


def test_a_module_that_fails_a_later_check_leaves_nothing_behind(tmp_path):
    """A module is saved into the session before the checks that need it; a failing check
    (here: a schedule that does not fit) removes it again: nothing is written."""
    retain = tmp_path / "retain.txt"
    retain.write_text("Iteration h1NodesRetained perNodesRetained\n0 7 100\n")
    with pytest.raises(UserError):
        run(_config(arch=Tiny()), tmp_path / "s", retain=retain, quiet=True,
            log=lambda line: None)
    assert not (tmp_path / "s").exists()


def test_a_module_that_cannot_be_imported_is_one_error_naming_the_setting(tmp_path):
    class Odd(Tiny):
        def forward(self, x):
            return self.fc(torch.sin(self.conv(x)).mean((2, 3)))

    with pytest.raises(UserError, match="^arch: .*unsupported operation 'sin'"):
        run(_config(arch=Odd()), tmp_path / "s", quiet=True, log=lambda line: None)
    assert not Path(tmp_path / "s").exists()
