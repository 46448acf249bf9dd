"""Loss, confidence and LiRA's logit-scaled confidence as scorers, with query augmentations."""

from __future__ import annotations

import pytest
import torch
from privbench_plugins.scorers.confidence import (
    ConfidenceScorer,
    LogitConfidenceScorer,
    LossScorer,
    logit_confidence,
    queries,
)

from privbench import Access, Model, ModelView
from privbench.plugins import Registry


def test_logit_confidence_is_log_odds_and_stays_finite():
    logits = torch.tensor(
        [[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [80.0, -80.0, -80.0]], dtype=torch.float64
    )
    y = torch.tensor([0, 2, 0])
    p = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    values = logit_confidence(logits, y)
    assert torch.allclose(values[:2], torch.log(p / (1 - p))[:2])
    # p rounds to 1 in float64; the logit form still gives 160 - log 2.
    assert torch.isfinite(values).all()
    assert values[2].item() == pytest.approx(160 - torch.log(torch.tensor(2.0)).item())


def test_queries_are_the_mirror_and_one_pixel_shifts():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    assert len(queries(x, "none")) == 1 and len(queries(x, "hflip")) == 2
    shifted = queries(x, "shift")
    assert len(shifted) == 5 and len(queries(x, "hflip+shift")) == 10
    # Shift by one pixel right: column j of the query is column j + 1 of the image.
    assert torch.equal(shifted[1][..., :, :3], x[..., :, 1:])


def _view() -> ModelView:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    return ModelView(Model(net, [0.5], [0.5]).eval(), Access.LOGITS)


def test_reduce_keeps_one_column_per_query_and_means_them():
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    view = _view()
    kept = LossScorer(augment="hflip+shift", reduce="keep").score(view, x, y)
    assert kept.shape == (5, 10)
    mean = LossScorer(augment="hflip+shift").score(view, x, y)
    assert torch.allclose(mean, kept.mean(1))
    loss = LossScorer().score(view, x, y)
    assert torch.allclose(loss, view.loss(x, y).double(), atol=1e-6)
    confidence = ConfidenceScorer().score(view, x, y)
    assert torch.allclose(confidence, torch.exp(-loss), atol=1e-6)
    odds = LogitConfidenceScorer().score(view, x, y)
    assert torch.allclose(odds, torch.log(confidence / (1 - confidence)), atol=1e-5)


def test_scorers_are_registered_beside_the_attacks_of_the_same_name():
    registry = Registry.from_environment()
    assert {"loss", "confidence", "logit-confidence"} <= set(registry.names("scorer"))
    assert registry.get("scorer", "loss").cls is LossScorer
    assert registry.get("attack", "loss").cls is not LossScorer
