"""Is a picture like the ones the model learned from? A cheap check against a reference that training
saves beside the weights (`familiarity.safetensors` in the checkpoint folder).

The feature of a picture is the mean and the log standard deviation, per dimension, of the model's
own vision-tower outputs (the merged patch embeddings the language model reads) over the picture
as the model first sees it: what it shows and how varied its patches are. The reference holds
their mean and principal directions over the training pictures; a picture's distance is its
Mahalanobis distance in those directions plus the residual off them. The threshold is a high
quantile of the distances of training pictures held out of the fit, so few pictures like the
training ones are called unfamiliar. A checkpoint without the file has no check (None).

    ref = fit_reference(features)                # features: (n, d), one row per training picture
    save_reference(ref, "runs/sft/final")        # or write_reference(model, encoder, pictures, folder, preset)
    familiar, score = ref.check(feature)         # score = distance / threshold; > 1 is unfamiliar
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

REFERENCE_FILE = "familiarity.safetensors"
MAX_COMPONENTS = 128  # principal directions kept (the rest is one residual variance)
HOLDOUT = 0.2  # share of the training pictures held out of the fit to set the threshold
QUANTILE = 0.95  # of the held-out distances: the threshold (docs/evaluation.md, "Familiar pictures")
MAX_PICTURES = 2000  # training pictures a reference is computed from (a seeded sample of more)


class FamiliarityError(ValueError):
    """A reference that cannot be built or read, with a message naming the cause."""


@dataclass
class FamiliarityReference:
    """Statistics of the model's vision features over its training pictures."""

    mean: np.ndarray  # (d,) mean feature
    components: np.ndarray  # (k, d) principal directions, orthonormal rows
    variances: np.ndarray  # (k,) variance along each direction
    residual_variance: float  # mean variance per dimension off the directions
    threshold: float  # distance above which a picture is unfamiliar
    pixel_preset: str = "tiny"  # the first-view resolution preset the features were computed at
    n_pictures: int = 0  # training pictures the reference was fitted on

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each row's distance from the training pictures (a Mahalanobis distance)."""
        x = np.atleast_2d(features).astype(np.float64) - self.mean
        proj = x @ self.components.T
        inside = (proj ** 2 / self.variances).sum(-1)
        residual = (x ** 2).sum(-1) - (proj ** 2).sum(-1)
        return np.sqrt(inside + np.maximum(residual, 0.0) / self.residual_variance)

    def check(self, feature: np.ndarray) -> tuple[bool, float]:
        """(familiar, distance over the threshold) of one feature."""
        score = float(self.distances(feature)[0] / self.threshold)
        return score <= 1.0, round(score, 4)


def _principal(x: np.ndarray, max_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean = x.mean(0)
    centered = x - mean
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    var = s ** 2 / max(len(x) - 1, 1)
    k = int(min(max_components, (var > var[0] * 1e-9).sum()))
    rest = var[k:]
    residual = float(rest.sum() / max(x.shape[1] - k, 1)) if rest.size else float(var[k - 1] * 1e-3)
    floor = var[:k].mean() * 1e-3  # shrinkage: no direction is trusted below this variance
    return mean, vt[:k], np.maximum(var[:k], floor), max(residual, floor)


def fit_reference(features: np.ndarray, pixel_preset: str = "tiny", seed: int = 0, holdout: float = HOLDOUT,
                  quantile: float = QUANTILE, max_components: int = MAX_COMPONENTS) -> FamiliarityReference:
    """Fit on most of `features` (one row per training picture); the threshold is the `quantile` of
    the held-out rows' distances."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 20:
        raise FamiliarityError(f"a familiarity reference needs at least 20 training pictures, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_held = max(10, int(len(x) * holdout))
    held, fit = x[order[:n_held]], x[order[n_held:]]
    mean, comps, var, residual = _principal(fit, min(max_components, len(fit) - 1))
    ref = FamiliarityReference(mean, comps, var, residual, threshold=1.0, pixel_preset=pixel_preset, n_pictures=len(x))
    ref.threshold = float(np.quantile(ref.distances(held), quantile))
    return ref


def mark_familiarity(backend, episodes: list) -> None:
    """Mark each image episode's (core.loop.Episode) trajectory familiar or not by the backend's
    check (video, and a model without a reference: left None). A failing check is logged and leaves
    them None: it never stops a session."""
    todo = [e for e in episodes if e.task.image is not None and e.trajectory.familiar is None]
    if not todo:
        return
    try:
        checks = backend.familiarity([e.task.image for e in todo])
    except Exception as e:  # noqa: BLE001 - an aid beside the answer: the answer goes on without it
        log.warning("familiarity check failed: %s: %s", type(e).__name__, e)
        return
    for episode, check in zip(todo, checks or []):
        episode.trajectory.familiar, episode.trajectory.familiarity = check


# ---- the file beside the weights -------------------------------------------------------------

def save_reference(ref: FamiliarityReference, folder: str | Path) -> Path:
    from safetensors.numpy import save_file

    path = Path(folder) / REFERENCE_FILE
    meta = {"threshold": ref.threshold, "residual_variance": ref.residual_variance,
            "pixel_preset": ref.pixel_preset, "n_pictures": ref.n_pictures, "feature": "vision_mean_logstd"}
    save_file({"mean": ref.mean.astype(np.float32), "components": ref.components.astype(np.float32),
               "variances": ref.variances.astype(np.float32)}, str(path), metadata={"familiarity": json.dumps(meta)})
    return path


def load_reference(folder: str | Path) -> FamiliarityReference | None:
    """The reference a checkpoint folder ships, or None (no file, a hub id, an unreadable file)."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = json.loads(f.metadata()["familiarity"])
            arrays = {k: f.get_tensor(k).astype(np.float64) for k in ("mean", "components", "variances")}
        return FamiliarityReference(**arrays, residual_variance=float(meta["residual_variance"]),
                                    threshold=float(meta["threshold"]), pixel_preset=meta["pixel_preset"],
                                    n_pictures=int(meta.get("n_pictures", 0)))
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as e:
        log.warning("ignoring unreadable familiarity reference %s: %s", path, e)
        return None


# ---- features from a model (torch) -----------------------------------------------------------

def picture_features(model, encoder, pictures: list[Image.Image | str | Path], pixel_preset: str,
                     batch: int = 32) -> np.ndarray:
    """(n, 2d): each picture's feature (`picture_feature`), the picture (or image file) sized as the
    model's first view."""
    import torch

    from core.operations import PixelLimits, resize_for_model

    limits = PixelLimits.preset(pixel_preset)
    param = next(model.parameters())
    rows = []
    with torch.inference_mode():
        for start in range(0, len(pictures), batch):
            views = [resize_for_model(_rgb(p), limits.first_min, limits.first_max) for p in pictures[start:start + batch]]
            pixels, grid = encoder.encode_images(views)
            out = model.get_image_features(pixel_values=pixels.to(param.device, param.dtype),
                                           image_grid_thw=grid.to(param.device))
            rows.extend(picture_feature(t.float().cpu().numpy()) for t in out.pooler_output)
    return np.stack(rows)


def picture_feature(tokens: np.ndarray) -> np.ndarray:
    """One picture's feature from its vision tokens (n, d): the mean and log standard deviation of each
    dimension, (2d,)."""
    return np.concatenate([tokens.mean(0), np.log(tokens.std(0) + 1e-3)])


def _rgb(picture: Image.Image | str | Path) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture.convert("RGB")
    with Image.open(picture) as im:
        return im.convert("RGB")


def write_reference(model, encoder, pictures: list[Image.Image | str | Path], folder: str | Path, pixel_preset: str,
                    seed: int = 0) -> Path | None:
    """Compute and save the reference of `model` over its training `pictures` (a seeded sample of at
    most MAX_PICTURES); None, with a warning, when there are too few pictures."""
    if len(pictures) > MAX_PICTURES:
        keep = np.random.default_rng(seed).choice(len(pictures), MAX_PICTURES, replace=False)
        pictures = [pictures[i] for i in sorted(keep)]
    if len(pictures) < 20:
        log.warning("no familiarity reference for %s: %d training pictures (at least 20 needed)", folder, len(pictures))
        return None
    features = picture_features(model, encoder, pictures, pixel_preset)
    return save_reference(fit_reference(features, pixel_preset, seed), folder)
