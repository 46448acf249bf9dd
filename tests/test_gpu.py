"""The GPU path: what only a CUDA device can show. Skipped, with the reason, everywhere else;
run them on a GPU machine (``pytest -m gpu``) and record the benchmarks in docs/performance.md."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from privbench_plugins.scorers import curvature
from torch.nn import functional as F

from privbench import Model, TrainingRecipe
from privbench.engine.audit import run_audit
from privbench.engine.ensemble import fit_ensemble
from privbench.engine.spec import AuditSpec, PluginChoice
from privbench.engine.store import Workspace
from privbench.engine.training import StandardTrainer
from privbench.plugins import get_registry

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (the CPU path is tested)"
    ),
    pytest.mark.usefixtures("fresh_registry"),
]


def _digits_models(k: int, **options):
    registry = get_registry()
    digits = registry.create("dataset", "digits").load(None)
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = registry.create("model", "small-cnn", options).create(
            digits.input_shape, digits.num_classes
        )
        models.append(Model(net, digits.mean, digits.std))
    return digits, models


def test_curvature_estimators_agree_between_the_cpu_and_cuda():
    digits, (model,) = _digits_models(1)
    x, y = digits.train.x[:128], digits.train.y[:128]
    values = {}
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(device).eval()

        def loss(inputs, labels, m=m):
            return F.cross_entropy(m(inputs), labels, reduction="none")

        xd, yd = x.to(device), y.to(device)
        g = torch.Generator().manual_seed(0)
        values[device] = [
            curvature.exact(loss, xd, yd, 4, g, "trace").cpu(),
            curvature.finite_difference(loss, xd, yd, 1e-2, 4, g, "norm", True).cpu(),
        ]
    for on_cpu, on_cuda in zip(values["cpu"], values["cuda"], strict=True):
        torch.testing.assert_close(on_cuda, on_cpu, rtol=1e-3, atol=1e-6)


def test_an_ensemble_on_cuda_trains_what_sequential_training_does():
    digits, models = _digits_models(4)
    rng = np.random.default_rng(0)
    data = [digits.train.subset(rng.permutation(len(digits.train))[:200]) for _ in models]
    recipe = TrainingRecipe(epochs=2)
    cuda = torch.device("cuda")
    sequential = [copy.deepcopy(m) for m in models]
    for k, (m, d) in enumerate(zip(sequential, data, strict=True)):
        StandardTrainer(recipe, seed=k, device=cuda).fit(m, d)
    fit_ensemble(models, data, [StandardTrainer(recipe, seed=k, device=cuda) for k in range(4)])
    for ours, theirs in zip(models, sequential, strict=True):
        for name, value in theirs.state_dict().items():
            # bfloat16 autocast on CUDA: agreement to bfloat16's precision, not float32's.
            torch.testing.assert_close(ours.state_dict()[name], value, atol=5e-2, rtol=5e-2)


def test_an_audit_runs_on_cuda_and_beats_chance_on_an_overfit_pool(tmp_path):
    spec = AuditSpec(
        attacks=(PluginChoice("loss"), PluginChoice("lira")),
        recipe=TrainingRecipe(epochs=30),
        shadows=7,
        population=400,
        device="cuda",
    )
    result = run_audit(spec, Workspace(tmp_path))
    assert result.to_record()["spec"]["device"].startswith("cuda")
    assert result.to_record()["utility"]["test_accuracy"] > 0.8
    assert max(a.metrics.auc for a in result.attacks) > 0.55


def test_book_keeping_clipping_on_cuda_matches_the_cpu():
    """DP-SGD's one-pass clipping (tensor hooks, strided patches, the convolution's weight-
    gradient kernel) gives on CUDA the clipped sums it gives on the CPU."""
    from privbench_plugins.defenses.dp_clipping import BookKeeping

    registry = get_registry()
    torch.manual_seed(0)
    net = registry.create("model", "conv-fc", {"norm": "group"}).create((1, 28, 28), 10).train()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    sums = {}
    for device in ("cpu", "cuda"):
        model = copy.deepcopy(net).to(device)
        clipping = BookKeeping(model, 0.5)
        with clipping.active():
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            clipped, _ = clipping.clipped_sum()
        names = {p: k for k, p in model.named_parameters()}
        sums[device] = {names[p]: v.cpu() for p, v in clipped.items()}
    for name, value in sums["cpu"].items():
        # TF32 convolutions on recent GPUs round to about 1e-3
        torch.testing.assert_close(sums["cuda"][name], value, rtol=1e-2, atol=1e-4, msg=name)
