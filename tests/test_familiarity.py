"""Familiar or not: the reference's arithmetic on known distributions, the file beside the weights,
and the embedded model's own reference on real photos (scikit-image's sample pictures, read from the
installed package) and on its own TinyZoom test split (regenerated from its seeds)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.familiarity_bench import PHOTOS, auroc, sample_photo
from core.backends import GenerationParams, load_backend
from core.backends.replay import ReplayBackend
from core.familiarity import REFERENCE_FILE, fit_reference, load_reference, save_reference
from core.loop import LoopConfig, Task, run_to_end
from core.operations import PixelLimits


def test_points_of_the_fitted_distribution_are_familiar_and_far_ones_are_not():
    rng = np.random.default_rng(0)
    ref = fit_reference(rng.normal(size=(500, 8)) * [1, 1, 1, 1, 1, 1, 1, 10])
    near = rng.normal(size=(200, 8)) * [1, 1, 1, 1, 1, 1, 1, 10]
    scores = ref.distances(near) / ref.threshold
    assert np.mean(scores > 1) < 0.1
    assert ref.check(np.array([0, 0, 0, 0, 0, 0, 0, 15.0]))[0] is True  # along the wide direction: familiar
    assert ref.check(np.array([0, 0, 0, 0, 0, 0, 0, 0.0]) + [8, 0, 0, 0, 0, 0, 0, 0])[0] is False


def test_a_reference_survives_the_file_and_a_folder_without_one_has_none(tmp_path):
    ref = fit_reference(np.random.default_rng(1).normal(size=(100, 6)), pixel_preset="train")
    save_reference(ref, tmp_path)
    back = load_reference(tmp_path)
    assert back.pixel_preset == "train" and back.n_pictures == 100
    assert back.threshold == pytest.approx(ref.threshold)
    x = np.random.default_rng(2).normal(size=(5, 6))
    assert np.allclose(back.distances(x), ref.distances(x), rtol=1e-4)
    assert load_reference(tmp_path / "nothing") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / REFERENCE_FILE).write_bytes(b"not safetensors")
    assert load_reference(tmp_path / "broken") is None


def test_too_few_pictures_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 20 training pictures"):
        fit_reference(np.zeros((5, 3)))


def test_auroc_counts_pairs_ordered_and_ties_half():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1], [1]) == 0.5


@pytest.fixture(scope="module")
def embedded():
    backend = load_backend("transformers")
    assert backend.reference is not None, "the embedded model ships familiarity.safetensors"
    return backend


def own_test_pictures(n: int) -> list:
    """The first `n` pictures of the TinyZoom test split, made by the generator from its seeds."""
    from train.synth.build import categories_for, split_seed
    from train.synth.tasks import make_item

    out = []
    for i, category in enumerate(categories_for(330)):
        item = make_item(category, split_seed(0, "test", i), f"test-{i}")
        if item.image is not None:
            out.append(item.image)
        if len(out) == n:
            return out
    return out


def test_real_photos_are_unfamiliar_to_the_embedded_model(embedded):
    pytest.importorskip("skimage")
    checks = embedded.familiarity([sample_photo(name) for name in PHOTOS])
    unfamiliar = [name for name, (familiar, _) in zip(PHOTOS, checks) if not familiar]
    assert len(unfamiliar) >= 9, checks


def test_its_own_test_split_is_familiar(embedded):
    checks = embedded.familiarity(own_test_pictures(100))
    assert len(checks) == 100
    assert np.mean([not familiar for familiar, _ in checks]) <= 0.05


def test_the_session_carries_the_check_and_a_model_without_a_reference_shows_none(embedded, tiny_checkpoint):
    picture = own_test_pictures(1)[0]
    config = LoopConfig(pixels=PixelLimits.preset("tiny"))
    traj = run_to_end(embedded, Task(question="What is on the tag?", image=picture), config=config,
                      params=GenerationParams(max_new_tokens=64))
    assert traj.familiar is True and 0 < traj.familiarity <= 1
    assert load_backend("transformers", model=str(tiny_checkpoint)).familiarity([picture]) is None
    assert run_to_end(ReplayBackend(["\\boxed{3}"]), Task(question="q", image=picture), config=config).familiar is None


def test_the_familiarity_command_writes_a_reference_into_a_checkpoint(tiny_checkpoint, tmp_path, capsys):
    import json
    import shutil

    from core.records import load_sft_records
    from train.familiarity import main, record_pictures
    from train.synth.build import BuildConfig, build

    data = tmp_path / "data"
    build(BuildConfig(out=str(data), train=30, validation=0, test=0, seed=2, progress=False))
    pictures = record_pictures(load_sft_records(data))
    assert 20 <= len(pictures) < 30 and all(p.is_file() for p in pictures)  # images only: videos add none
    model = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, model)
    assert main(["--model", str(model), "--data", str(data), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["pictures"] == len(pictures) and out["pixel_preset"] == "tiny"
    backend = load_backend("transformers", model=str(model))
    checks = backend.familiarity([own_test_pictures(1)[0]])
    assert len(checks) == 1 and isinstance(checks[0][0], bool)
    assert main(["--model", str(model), "--data", str(tmp_path / "none"), "--device", "cpu"]) == 2
