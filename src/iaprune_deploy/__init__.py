"""Deploy an IA-Prune model with torch alone: bundles, loading, and prediction from raw inputs.

Imports only torch, numpy and the standard library (never `src`), so this folder keeps working
when copied alone next to a bundle; image files (PNG, JPEG, ...) are read with Pillow when it is
installed (`.npy` arrays need nothing more):

    import deploy
    model = deploy.load("deploy/bundle")          # or a best_model.pth
    deploy.predict(model, images_uint8).labels     # raw images, scaled as in training

MLPs and convolutional networks alike: the checkpoint's architecture spec is rebuilt by
deploy.model.DeployedNet, a torch-only twin of src/spec.py's build.
"""

from .bundle import __version__, find_recommended, load, load_pruned_model, write_bundle
from .inputs import InputSpec, Prediction, predict, preprocess
from .model import BundleError, DeployedMLP, DeployedNet, SpecError

__all__ = ["BundleError", "DeployedMLP", "DeployedNet", "InputSpec", "Prediction", "SpecError",
           "__version__", "find_recommended", "load", "load_pruned_model", "predict",
           "preprocess", "write_bundle"]
