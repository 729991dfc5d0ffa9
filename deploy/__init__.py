"""Deploy an IA-Prune model with torch alone: bundles, loading, and prediction from raw inputs.

Imports only torch, numpy and the standard library (never `src`), so this folder keeps working
when copied alone next to a bundle; image files (PNG, JPEG, ...) are read with Pillow when it is
installed (`.npy` arrays need nothing more):

    import deploy
    model = deploy.load("deploy/bundle")          # or a best_model.pth
    deploy.predict(model, images_uint8).labels     # raw 28x28 images, scaled as in training
"""

from .bundle import __version__, find_recommended, load, load_pruned_model, write_bundle
from .inputs import InputSpec, Prediction, predict, preprocess
from .model import BundleError, DeployedMLP

__all__ = ["BundleError", "DeployedMLP", "InputSpec", "Prediction", "__version__",
           "find_recommended", "load", "load_pruned_model", "predict", "preprocess",
           "write_bundle"]
