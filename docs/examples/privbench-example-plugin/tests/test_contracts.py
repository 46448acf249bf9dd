"""The example plugin keeps privbench's contracts, through the same kit the built-ins use."""

from typing import ClassVar

import numpy as np
import torch
from privbench_example_plugin import EntropyAttack, MarginScorer

from privbench import Access, ModelView
from privbench.testing import AttackContract, ScorerContract, check_attack


class TestEntropyContract(AttackContract):
    plugin_class = EntropyAttack


class TestEntropyAtTemperatureTwo(AttackContract):
    plugin_class = EntropyAttack
    options: ClassVar[dict] = {"temperature": 2.0}


class TestMarginContract(ScorerContract):
    plugin_class = MarginScorer


def test_the_entropy_score_is_a_negated_entropy():
    assert np.all(check_attack(EntropyAttack) <= 0)


def test_the_margin_is_the_true_logit_minus_the_best_other(tiny_model):
    view = ModelView(tiny_model, Access.LOGITS)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    logits = view.logits(x)
    margins = MarginScorer().score(view, x, y)
    for i in range(4):
        others = [logits[i, c] for c in range(3) if c != y[i]]
        assert torch.isclose(margins[i], (logits[i, y[i]] - max(others)).double())


def test_the_command_is_there(privbench_cli):
    code, out, _ = privbench_cli("example-plugin-info")
    assert code == 0 and "plugin API 1" in out
