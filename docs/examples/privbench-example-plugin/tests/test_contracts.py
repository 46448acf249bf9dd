"""The example plugin keeps privbench's contracts (privbench.testing), as every built-in does."""

import numpy as np
import torch
from privbench_example_plugin import EntropyAttack, MarginScorer

from privbench import Access, Model, ModelView
from privbench.testing import check_attack, check_scorer


def test_the_attack_keeps_the_contract():
    scores = check_attack(EntropyAttack)
    assert np.all(scores <= 0)  # a negated entropy


def test_the_scorer_keeps_the_contract():
    check_scorer(MarginScorer)


def test_the_margin_is_the_true_logit_minus_the_best_other():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    net.forward_features = lambda x: x.flatten(1)
    net.forward_head = lambda f, pre_logits=False: f
    net.get_classifier = lambda: torch.nn.Identity()
    view = ModelView(Model(net, [0.0], [1.0]).eval(), Access.LOGITS)
    x = torch.tensor([[[[3.0, 1.0, 2.0]]], [[[0.0, 5.0, 1.0]]]])
    margins = MarginScorer().score(view, x, torch.tensor([0, 2]))
    assert margins.tolist() == [1.0, -4.0]
