"""The IA-Prune runtime: run a pruned model with torch alone (bundles, loading, prediction).

Imports only torch, numpy and the standard library (never the `iaprune` library), so a deployed
model needs neither IA-Prune nor its dependencies: this package, copied alone next to a bundle
(or installed), loads and runs it. Image files (PNG, JPEG, ...) are read with Pillow when it is
installed (`.npy` arrays need nothing more):

    import iaprune_runtime as deploy
    model = deploy.load("deploy/bundle")          # or a best_model.pth
    deploy.predict(model, images_uint8).labels     # raw images, scaled as in training

MLPs and convolutional networks alike: the checkpoint's architecture spec is rebuilt by
iaprune_runtime.model.DeployedNet.
"""

from .bundle import __version__, find_recommended, load, load_pruned_model, write_bundle
from .inputs import InputSpec, Prediction, predict, preprocess
from .model import BundleError, DeployedMLP, DeployedNet, SpecError

__all__ = ["BundleError", "DeployedMLP", "DeployedNet", "InputSpec", "Prediction", "SpecError",
           "__version__", "find_recommended", "load", "load_pruned_model", "predict",
           "preprocess", "write_bundle"]
