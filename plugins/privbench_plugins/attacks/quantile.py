"""Quantile-regression membership inference (Bertran et al., NeurIPS 2023, "Scalable Membership
Inference Attacks via Quantile Regression"; official code: amazon-science/quantile-mia).

No shadow models: one regressor, trained on samples known not to be members (the public
non-members of :attr:`privbench.AttackContext.public`, the dataset's test split), predicts per
sample the distribution of the target's score on a non-member like it. A sample whose score
lies high in that distribution is called a member: the threshold differs per sample, which
calibrates each sample's difficulty as LiRA's OUT shadows do, at the cost of one model.

Threat model: ``logits`` access to the target, on the candidates and on the public samples.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from privbench import Access, AttackContext, OptionError, Signal, TensorData, hookimpl


def hinge_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The official code's default score: the true class's logit minus the largest other one,
    ``z_y(x) - max_{y' != y} z_{y'}(x)`` (higher = more confident in the label)."""
    logits = logits.double()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(1).values


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official Gaussian variant's loss: the negative log-likelihood of *target* under
    ``N(mean, exp(log_std)^2)``, up to a constant (one value per sample)."""
    return log_std + 0.5 * torch.exp(-2 * log_std) * (target - mean) ** 2


def pinball_loss(
    predicted: torch.Tensor, target: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """The pinball (quantile) loss of ``N x Q`` predicted quantiles at *levels* (``Q``)."""
    delta = target[:, None] - predicted
    return F.relu(delta) * levels + F.relu(-delta) * (1 - levels)


def _split(count: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    order = torch.randperm(count, generator=generator)
    held = min(max(1, round(fraction * count)), count - 1) if fraction > 0 else 0
    return order[held:], order[:held]


@attrs.frozen
class QuantileAttack:
    """Bertran et al. (2023): a regressor ``q(x, y)`` fitted on public non-members predicts the
    distribution of the target's hinge score ``s(x) = z_y - max_{y' != y} z_{y'}`` on
    non-members; a candidate's membership score is how far its own score lies above it.

    ``variant gaussian`` (the official code's sample script: ``--use_gaussian``) predicts a mean
    and a log standard deviation by Gaussian likelihood, and scores ``(s(x) - mu(x)) / sigma(x)``:
    thresholding it at ``Phi^-1(1 - alpha)`` is the paper's attack at false-positive rate
    ``alpha``, so one model serves the whole ROC. ``variant pinball`` fits ``quantiles``
    heads at levels ``1 - alpha`` log-spaced over ``alpha`` in ``[min_alpha, 0.5]`` with the
    pinball loss (sorted into monotone order, as the official code rearranges them) and scores
    the highest level a candidate's score reaches, interpolated between heads.

    The regressor takes the image and the one-hot label (the official ``--use_target_inputs``);
    the paper fine-tunes a ConvNeXt, here a small MLP on the flattened pixels trains in seconds
    on a CPU. A fraction ``validation`` of the public samples is held out and the weights with
    the lowest held-out loss are kept (the official code keeps its best validation checkpoint).
    The engine trains no shadow model for it (``victim_setting``: ``--shadows 0`` unless given).
    """

    name: ClassVar[str] = "quantile"
    description: ClassVar[str] = (
        "Bertran et al. 2023: quantile regression on public non-members, no shadow models"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 0
    victim_setting: ClassVar[dict[str, object]] = {"shadows": 0}
    """One regressor replaces the pool of reference models: none are trained."""

    variant: str = attrs.field(
        default="gaussian", validator=attrs.validators.in_(("gaussian", "pinball"))
    )
    """What the regressor predicts: a Gaussian mean and std, or a grid of pinball quantiles.

    ``gaussian`` serves every FPR with one model; ``pinball`` fits ``quantiles`` heads."""
    quantiles: int = attrs.field(default=41, validator=attrs.validators.ge(2))
    """How many quantile heads the pinball variant fits (the official default, 41)."""
    min_alpha: float = attrs.field(
        default=0.001, validator=[attrs.validators.gt(0), attrs.validators.lt(0.5)]
    )
    """The smallest false-positive rate the pinball variant's heads resolve."""
    width: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    """Hidden units of each of the regressor's two hidden layers."""
    steps: int = attrs.field(default=400, validator=attrs.validators.ge(1))
    """Adam steps (batches of 64 public samples)."""
    lr: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    """Adam's learning rate."""
    weight_decay: float = attrs.field(default=1e-4, validator=attrs.validators.ge(0))
    """Adam's (decoupled) weight decay."""
    validation: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    """Fraction of the public samples held out to choose the weights (0: keep the last)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return (Signal.logits("none"),)

    def _levels(self) -> torch.Tensor:
        alphas = np.logspace(np.log10(self.min_alpha), np.log10(0.5), self.quantiles)
        return torch.from_numpy(np.sort(1 - alphas)).float()

    def score(self, context: AttackContext) -> np.ndarray:
        public = context.public
        if public is None or len(public) < 2:
            raise OptionError(
                "attack 'quantile' needs public non-member data (the dataset's test split), "
                "which this audit does not have"
            )
        target_public = hinge_score(context.target.logits(public.x), public.y)
        target_population = hinge_score(
            context.target.population_logits("none"), context.population.y
        )
        model, center, scale = self._fit(public, target_public, context.num_classes, context.seed)
        with torch.no_grad():
            out = model(self._inputs(context.population, context.num_classes, center))
        standard = ((target_population - scale[0]) / scale[1]).float()
        if self.variant == "gaussian":
            z = (standard - out[:, 0]) / torch.exp(out[:, 1])
            return z.double().numpy()
        return self._reached_level(out.sort(1).values, standard).numpy()

    def _reached_level(self, predicted: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The quantile level at which *score* meets each row's monotone quantile curve,
        linear between heads and extended by the score's distance past the extreme heads (so
        that the ranking is strict beyond them)."""
        levels = self._levels().double()
        predicted, score = predicted.double().contiguous(), score.double()
        count = predicted.shape[1]
        k = torch.searchsorted(predicted, score[:, None]).squeeze(1).clamp(1, count - 1)
        lo = predicted.gather(1, (k - 1)[:, None]).squeeze(1)
        hi = predicted.gather(1, k[:, None]).squeeze(1)
        gap = hi - lo
        t = torch.where(gap > 0, (score - lo) / gap.clamp_min(1e-300), torch.full_like(gap, 0.5))
        inside = levels[k - 1] + t.clamp(0, 1) * (levels[k] - levels[k - 1])
        below = levels[0] - 1e-3 * torch.tanh(predicted[:, 0] - score)
        above = levels[-1] + 1e-3 * torch.tanh(score - predicted[:, -1])
        return torch.where(
            score <= predicted[:, 0], below, torch.where(score >= predicted[:, -1], above, inside)
        )

    def _inputs(self, data: TensorData, classes: int, center: torch.Tensor) -> torch.Tensor:
        pixels = data.x.reshape(len(data), -1).float() - center
        return torch.cat([pixels, F.one_hot(data.y, classes).float()], 1)

    def _fit(
        self, public: TensorData, scores: torch.Tensor, classes: int, seed: int
    ) -> tuple[nn.Module, torch.Tensor, tuple[float, float]]:
        generator = torch.Generator().manual_seed(seed)
        train, held = _split(len(public), self.validation, generator)
        center = public.x[train].reshape(len(train), -1).float().mean(0)
        inputs = self._inputs(public, classes, center)
        mean, std = float(scores[train].mean()), float(scores[train].std()) or 1.0
        targets = ((scores - mean) / std).float()
        outputs = 2 if self.variant == "gaussian" else self.quantiles
        levels = self._levels()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = nn.Sequential(
                nn.Linear(inputs.shape[1], self.width),
                nn.ReLU(),
                nn.Linear(self.width, self.width),
                nn.ReLU(),
                nn.Linear(self.width, outputs),
            )

        def loss(rows: torch.Tensor) -> torch.Tensor:
            out = model(inputs[rows])
            if self.variant == "gaussian":
                return gaussian_nll(out[:, 0], out[:, 1], targets[rows]).mean()
            return pinball_loss(out, targets[rows], levels).mean()

        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        best, best_state = float("inf"), None
        for step in range(1, self.steps + 1):
            rows = train[torch.randint(len(train), (min(64, len(train)),), generator=generator)]
            optimizer.zero_grad(set_to_none=True)
            loss(rows).backward()
            optimizer.step()
            if len(held) and (step % 20 == 0 or step == self.steps):
                with torch.no_grad():
                    value = float(loss(held))
                if value < best:
                    best = value
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if best_state is not None:
            model.load_state_dict(best_state)
        return model.eval(), center, (mean, std)


@hookimpl
def register_attacks(register):
    register(QuantileAttack)
