"""The public API at the package's top: what a user imports from their own code."""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import iaprune
from iaprune import (
    PruneConfig,
    Retraining,
    from_module,
    geometric_schedule,
    load_dataset,
    load_pruned_model,
    run,
    save_checkpoint,
    write_schedule,
)

FUNCTIONS = [name for name in iaprune.__all__
             if inspect.isfunction(getattr(iaprune, name, None))]


def test_every_public_name_resolves_and_unknown_names_are_an_attribute_error():
    """`from iaprune import X` works for every name in __all__; a typo is AttributeError."""
    for name in iaprune.__all__:
        assert getattr(iaprune, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'runn'"):
        iaprune.runn  # noqa: B018


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_functions_document_args_returns_and_an_example(name):
    """Each public function's docstring has Args (when it takes any), Returns and Example."""
    function = getattr(iaprune, name)
    doc = inspect.getdoc(function) or ""
    takes_args = bool(inspect.signature(function).parameters)
    assert "Example:" in doc, name
    assert "Returns:" in doc, name
    assert not takes_args or "Args:" in doc, name


@pytest.mark.parametrize("name", FUNCTIONS)
def test_docstring_examples_run_as_written(name, tmp_path, monkeypatch):
    """The examples print what their docstrings say (run in an empty folder, in the order of
    a user's session: a checkpoint and a schedule written first where an example reads them)."""
    monkeypatch.chdir(tmp_path)
    write_schedule(geometric_schedule([32, 16], q=0.7, iterations=3), "retain.txt")
    tiny = iaprune.build({"input": [64], "layers": [{"type": "linear", "out": 10}]}, seed=0)
    save_checkpoint("tiny.pth", tiny, dataset="digits")
    pruned = iaprune.build({"input": [64], "layers": [{"type": "linear", "out": 8}, "relu",
                                                      {"type": "linear", "out": 10}]}, seed=0)
    save_checkpoint("pruned.pth", pruned)
    function = getattr(iaprune, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(function, name, globs={}):
        runner.run(test)
    assert runner.failures == 0, name


class SimpleNN(nn.Module):
    """The README's class, sized for scikit-learn's 8x8 digits: a user's own model."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = x.view(len(x), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_a_users_module_is_pruned_through_the_api_and_loads_back_into_its_class(tmp_path,
                                                                               monkeypatch):
    """A trained SimpleNN imported with from_module, pruned for two rows by `run`, comes back
    into a fresh SimpleNN with the pruned sizes and the pruned network's outputs."""
    monkeypatch.chdir(tmp_path)
    data = load_dataset("digits")
    torch.manual_seed(0)
    mine = SimpleNN()
    optimizer = torch.optim.Adam(mine.parameters(), lr=1e-2)
    for _ in range(60):  # the user's own training
        optimizer.zero_grad()
        F.cross_entropy(mine(data.train.x), data.train.y).backward()
        optimizer.step()
    save_checkpoint("simple.pth", from_module(mine, data.input_shape), dataset="digits",
                    input=data.input_info())
    write_schedule(geometric_schedule([32, 16], q=0.7, iterations=3), "retain.txt")
    config = PruneConfig(dataset="digits", base_model="simple.pth",
                         retraining=Retraining(epochs=3))
    results = run(config, "session", retain="retain.txt", quiet=True, log=lambda _: None)
    assert [row.neurons for row in results.schedule] == [(32, 16), (22, 11), (16, 8)]
    last = results.session.mode_dir / "2" / "prune_w_retrain" / "best_model.pth"
    with pytest.raises(TypeError, match=r"load_pruned_model\(model, path\) takes your model "
                                         r".*; got SimpleNN and PosixPath"):
        load_pruned_model(SimpleNN, last)  # the class, not a model: one line saying what to give
    pruned = load_pruned_model(SimpleNN(), last)
    assert (pruned.fc1.out_features, pruned.fc2.out_features) == (16, 8)
    network, _ = iaprune.load_model(last)
    with torch.no_grad():
        torch.testing.assert_close(pruned(data.test.x), network(data.test.x))
        accuracy = (pruned(data.test.x).argmax(1) == data.test.y).float().mean().item()
    assert accuracy > 0.8  # a pruned digits MLP, not a constant predictor (10 %)
