"""Conformance tests every scorer passes, on a tiny synthetic data set with a learnable structure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from training.evaluation.ranking import ndcg_at_10
from training.models import ease, popularity, rbm, sae, two_tower
from training.models.base import Scorer, TrainingData
from training.models.item_autorec import fit_biases
from training.pipeline import load_model, make_config

QUICK = {
    "popularity": {},
    "sae": {"max_epochs": 40, "patience": 40},
    "rbm": {"max_epochs": 25, "patience": 25},
    "two_tower": {"max_epochs": 40, "patience": 40},
    "ease": {},
    "ease_low_rank": {"max_dense_items": 10, "rank": 24},  # the form past ~20k items, forced on a tiny set
}
TRAIN = {"popularity": popularity.train, "sae": sae.train, "rbm": rbm.train, "two_tower": two_tower.train}
CLOSED_FORM = {
    "popularity": lambda data, overrides: popularity.train(data, make_config("popularity")),
    "ease": lambda data, overrides: _ease_member(data, overrides),
    "ease_low_rank": lambda data, overrides: _ease_member(data, overrides),
}


def _ease_member(data: TrainingData, overrides: dict) -> ease.EASE:
    model, history = ease.train_member(data, make_config("ease", overrides))
    assert [e["ndcg@10"] for e in history.epochs][history.best_epoch] == max(e["ndcg@10"] for e in history.epochs)
    return model


@pytest.fixture(scope="module", params=list(QUICK))
def trained(request: pytest.FixtureRequest, tiny_data: TrainingData) -> Scorer:
    name = request.param
    if name in CLOSED_FORM:
        return CLOSED_FORM[name](tiny_data, QUICK[name])
    config = make_config(name, QUICK[name], device="cpu")
    model, history = TRAIN[name](tiny_data, config, progress=False)
    assert history.epochs and all(np.isfinite(e["loss"]) for e in history.epochs)
    return model


def _random_ndcg(data: TrainingData) -> float:
    rng = np.random.default_rng(0)
    return ndcg_at_10(lambda users, hist: rng.random((len(users), hist.shape[1])), data.validation)


class TestScorerConformance:
    def test_scores_every_item_with_finite_values(self, trained: Scorer, tiny_data: TrainingData) -> None:
        scores = trained.score(tiny_data.train[:7], np.arange(7))
        assert scores.shape == (7, tiny_data.dataset.n_items)
        assert np.isfinite(scores).all()

    def test_ranks_better_than_chance(self, trained: Scorer, tiny_data: TrainingData) -> None:
        ndcg = ndcg_at_10(lambda users, hist: trained.score(hist, users), tiny_data.validation)
        assert ndcg > _random_ndcg(tiny_data) + 0.03

    def test_predicted_ratings_stay_on_the_scale(self, trained: Scorer, tiny_data: TrainingData) -> None:
        predicted = trained.predict_ratings(tiny_data.train[:5])
        if predicted is None:
            pytest.skip(f"{trained.name} does not predict ratings")
        scale = tiny_data.dataset.scale
        assert predicted.shape == (5, tiny_data.dataset.n_items)
        assert predicted.min() >= scale.low - 1e-5 and predicted.max() <= scale.high + 1e-5

    def test_a_new_user_is_scored_from_ratings_alone(self, trained: Scorer, tiny_data: TrainingData) -> None:
        dataset = tiny_data.dataset
        raw = dataset.item_ids.to_raw(np.arange(5))
        scores, unknown = trained.score_raw({int(r): 5.0 for r in raw} | {987654: 4.0})
        assert unknown.item_ids == (987654,)
        assert scores.shape == (dataset.n_items,) and np.isfinite(scores).all()
        empty, nothing = trained.score_raw({})
        assert nothing.item_ids == () and np.isfinite(empty).all()

    def test_save_and_load_give_identical_scores(
        self, trained: Scorer, tiny_data: TrainingData, tmp_path: Path
    ) -> None:
        folder = trained.save(tmp_path / trained.name)
        loaded = load_model(folder)
        histories = tiny_data.train[:9]
        np.testing.assert_allclose(
            loaded.score(histories, np.arange(9)), trained.score(histories, np.arange(9)), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(loaded.item_ids.raw_ids, trained.item_ids.raw_ids)


def test_history_changes_personalised_scores(tiny_data: TrainingData) -> None:
    model, _ = sae.train(tiny_data, make_config("sae", QUICK["sae"], device="cpu"), progress=False)
    a = model.score(sp.csr_matrix(tiny_data.train[0]))
    b = model.score(sp.csr_matrix(tiny_data.train[1]))
    assert not np.allclose(a, b)


def test_two_tower_embeds_items_nobody_rated(tiny_data: TrainingData) -> None:
    model, _ = two_tower.train(tiny_data, make_config("two_tower", QUICK["two_tower"], device="cpu"), progress=False)
    items = model.item_embeddings().numpy()
    genres = tiny_data.dataset.genres
    # Content alone separates items: two items with different genres get different embeddings
    # even through the id part, which is the same for both at initialisation.
    assert items.shape == (tiny_data.dataset.n_items, model.config.dim + 1)
    different = np.flatnonzero((genres != genres[0]).any(axis=1))[0]
    assert not np.allclose(items[0, :-1], items[different, :-1])


def test_configs_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        sae.SAEConfig(activation="cosine")
    with pytest.raises(ValueError, match="visible must be"):
        rbm.RBMConfig(visible="stars")
    with pytest.raises(ValueError, match="ranking_target"):
        sae.SAEConfig(ranking_target="clicked")
    with pytest.raises(ValueError, match="rating_blend"):
        sae.SAEConfig(rating_blend=1.5)
    with pytest.raises(ValueError, match="target"):
        two_tower.TwoTowerConfig(target="clicked")
    with pytest.raises(ValueError, match="negatives"):
        rbm.RBMConfig(negatives=-1.0)
    with pytest.raises(ValueError, match="l2"):
        ease.EASEConfig(l2=0.0)
    with pytest.raises(ValueError, match="has no setting"):
        make_config("sae", {"hiden": [3]})


def test_liked_rbm_is_binary_and_starts_from_the_item_marginals(tiny_data: TrainingData) -> None:
    """The "not liked" level is the reference (zero weight): only liked items drive the hidden units,
    so their input does not grow with the catalogue; biases start at each item's liked log-odds."""
    levels = sp.csr_matrix(np.array([[2, 2, 1, 0], [2, 0, 0, 0], [2, 1, 0, 0]], dtype=np.float32))
    bias = rbm._initial_visible_bias(levels, 2, None, reference=True).numpy()
    assert (bias[:, 0] == 0).all()
    assert bias[0, 1] > bias[1, 1] > bias[3, 1]  # liked by all three > liked by one > never rated
    model, _ = rbm.train(tiny_data, make_config("rbm", {"max_epochs": 3}, device="cpu"), progress=False)
    assert (model.net.weight[:, 0, :] == 0).all() and (model.net.visible_bias[:, 0] == 0).all()


def _validation_rmse(model: sae.SAE, data: TrainingData) -> float:
    from training.evaluation.rating import rating_metrics

    return float(rating_metrics(model, data.train, data.validation_ratings)["rmse"])


def test_sae_rating_blend_is_chosen_on_validation(tiny_data: TrainingData) -> None:
    model, _ = sae.train(tiny_data, make_config("sae", QUICK["sae"], device="cpu"), progress=False)
    assert model.item_net is not None and 0.0 <= model.item_share <= 1.0
    chosen = _validation_rmse(model, tiny_data)
    for share in (0.0, 1.0):  # the grid holds both paths alone, so the chosen blend is no worse than either
        model.item_share = share
        assert chosen <= _validation_rmse(model, tiny_data) + 1e-9


def test_sae_item_path_serves_training_users_only(tiny_data: TrainingData, tmp_path: Path) -> None:
    config = make_config("sae", {**QUICK["sae"], "rating_blend": 0.5}, device="cpu")
    model, _ = sae.train(tiny_data, config, progress=False)
    histories = tiny_data.train[:4]
    user_path = model.predict_ratings(histories)  # no user indices: the user-based path alone
    known = model.predict_ratings(histories, np.arange(4))
    unknown = model.predict_ratings(histories, np.array([-1, 1, -1, 10**6]))
    assert not np.allclose(known, user_path)
    np.testing.assert_allclose(unknown[[0, 2, 3]], user_path[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(unknown[1], known[1], rtol=1e-6)
    scale = tiny_data.dataset.scale
    assert known.min() >= scale.low - 1e-5 and known.max() <= scale.high + 1e-5
    loaded = load_model(model.save(tmp_path / "sae"))
    np.testing.assert_allclose(loaded.predict_ratings(histories, np.arange(4)), known, rtol=1e-5, atol=1e-5)


def test_sae_item_path_encodes_items_from_the_ratings_it_is_handed(tiny_data: TrainingData) -> None:
    model, _ = sae.train(
        tiny_data, make_config("sae", {**QUICK["sae"], "rating_blend": 1.0}, device="cpu"), progress=False
    )
    assert model.item_net is not None and len(model.item_net.nets) == model.config.item_nets
    users = np.arange(3)
    trained_on = model.predict_ratings(tiny_data.train[users], users)
    more = tiny_data.train.tolil()
    more[10:20, :] = tiny_data.dataset.scale.high  # other users rate every item: item codes and biases move
    model.observe(more.tocsr())
    assert not np.allclose(model.predict_ratings(tiny_data.train[users], users), trained_on)
    model.observe(tiny_data.train)
    np.testing.assert_allclose(model.predict_ratings(tiny_data.train[users], users), trained_on, rtol=1e-5, atol=1e-5)


def test_bias_baseline_recovers_additive_ratings_and_shrinks_sparse_ones() -> None:
    users, items = np.array([0.5, -0.5, 0.0]), np.array([1.0, 0.0, -1.0, 0.25])
    exact = sp.csr_matrix(3.0 + users[:, None] + items[None, :])
    mean, user_bias, item_bias = fit_biases(exact, 0.0, 0.0, sweeps=50)
    np.testing.assert_allclose(mean + user_bias[:, None] + item_bias[None, :], exact.toarray(), atol=1e-6)
    _, shrunk_users, shrunk_items = fit_biases(exact, 1e6, 1e6)
    assert np.abs(shrunk_users).max() < 1e-3 and np.abs(shrunk_items).max() < 1e-3


def test_sae_without_item_path_keeps_the_user_path(tiny_data: TrainingData, tmp_path: Path) -> None:
    config = make_config("sae", {**QUICK["sae"], "item_hidden": None}, device="cpu")
    model, _ = sae.train(tiny_data, config, progress=False)
    histories = tiny_data.train[:3]
    assert model.item_net is None
    # The item path trains on its own random streams: the ranking scores are the same with it.
    with_item_path, _ = sae.train(tiny_data, make_config("sae", QUICK["sae"], device="cpu"), progress=False)
    np.testing.assert_array_equal(with_item_path.score(histories), model.score(histories))
    np.testing.assert_allclose(model.predict_ratings(histories, np.arange(3)), model.predict_ratings(histories))
    assert not (model.save(tmp_path / "sae") / sae.ITEM_WEIGHTS).exists()


def test_ease_member_chooses_l2_on_validation_within_its_time(tiny_data: TrainingData) -> None:
    grid = (5.0, 50.0, 500.0)
    model, history = ease.train_member(tiny_data, make_config("ease", {"l2": 50.0, "l2_grid": grid}))
    assert history.epochs[0]["l2"] == 50.0 and {e["l2"] for e in history.epochs} == set(grid)
    best = max(history.epochs, key=lambda e: e["ndcg@10"])
    assert model.config.l2 == best["l2"] and history.best == best["ndcg@10"]
    # No time left after the first value: the grid's middle (the configured λ) alone, said so.
    quick, cut = ease.train_member(tiny_data, make_config("ease", {"l2": 50.0, "l2_grid": grid, "search_seconds": 0}))
    assert [e["l2"] for e in cut.epochs] == [50.0] and cut.stopped_early and quick.config.l2 == 50.0


def test_ease_low_rank_at_full_rank_is_the_dense_model(tiny_data: TrainingData) -> None:
    """XᵀX has rank <= users, so the low-rank form with that many eigenpairs is exact."""
    full = min(tiny_data.train.shape)
    settings = {"l2": 40.0, "l2_grid": (40.0,)}
    dense, _ = ease.train_member(tiny_data, make_config("ease", settings))
    low, _ = ease.train_member(tiny_data, make_config("ease", {**settings, "max_dense_items": 10, "rank": full}))
    assert (dense.form, low.form) == ("dense", "low_rank") and low.arrays["factors"].shape[1] <= full
    histories = tiny_data.train[:10]
    np.testing.assert_allclose(low.score(histories), dense.score(histories), atol=2e-4)
    reference = ease.train(tiny_data, ease.EASEConfig(l2=40.0))  # the bench's reference, the same model
    np.testing.assert_allclose(reference.score(histories), dense.score(histories), atol=1e-6)


def test_ease_exact_spectral_route_is_the_solved_model(tiny_data: TrainingData) -> None:
    """Fewer users than items: the thin SVD of X gives XᵀX exactly, so B needs no items x items solve."""
    assert not ease.spectral(*tiny_data.train.shape, ease.EASEConfig())  # 120 users, 150 items: the solve
    settings = {"l2": 40.0, "l2_grid": (10.0, 40.0, 160.0)}
    solved, solved_history = ease.train_member(tiny_data, make_config("ease", settings))
    forced = make_config("ease", {**settings, "spectral_user_share": 1.0})
    assert ease.spectral(*tiny_data.train.shape, forced)
    spectral, history = ease.train_member(tiny_data, forced)
    assert spectral.form == "dense" and spectral.config.l2 == solved.config.l2
    np.testing.assert_allclose(spectral.arrays["weights"], solved.arrays["weights"], atol=1e-5)
    assert [e["ndcg@10"] for e in history.epochs] == pytest.approx([e["ndcg@10"] for e in solved_history.epochs])
    rated = (tiny_data.train > 0).astype(np.float64).tocsr()
    vectors, values = ease.exact_eigenpairs(rated)
    assert vectors.shape[1] <= min(rated.shape) and np.all(values > 0)
    from_spectrum = ease.weights_from_spectrum(vectors, values, 40.0)
    np.testing.assert_allclose(from_spectrum, ease.fit_weights(rated, 40.0), atol=1e-9)
    reference = ease.train(tiny_data, replace(forced, l2=solved.config.l2))  # the bench's row takes the same route
    np.testing.assert_allclose(reference.arrays["weights"], spectral.arrays["weights"], atol=1e-6)


def test_ease_exact_route_offers_the_truncated_form_to_validation(tiny_data: TrainingData) -> None:
    forced = make_config("ease", {"l2": 40.0, "l2_grid": (10.0, 40.0), "spectral_user_share": 1.0, "rank": 8})
    model, history = ease.train_member(tiny_data, forced)
    full = int(history.epochs[0]["rank"])
    assert [(e["l2"], e["rank"]) for e in history.epochs] == [(40.0, full), (40.0, 8), (10.0, full), (10.0, 8)]
    best = history.epochs[history.best_epoch]
    assert model.config.l2 == best["l2"] and model.form == ("dense" if best["rank"] == full else "low_rank")
    assert ease.validation_metrics(model, tiny_data)["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-6)
