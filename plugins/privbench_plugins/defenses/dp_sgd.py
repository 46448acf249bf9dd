"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) through opacus.

Each step samples a Poisson batch, clips every per-sample gradient to ``max_grad_norm``, adds
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` and lets the recipe's
optimizer take the step; opacus' accountant turns (sampling rate, noise, steps) into the
(epsilon, delta) guarantee that :meth:`DPSGD.fit` records, so that an audit can print the tight
bounds that guarantee puts on every attack metric beside the measured ones.

Randomness is seeded (sampling, augmentation and noise follow ``trainer.seed``), as the audit
needs reproducible models; the guarantee is then the usual one for a pseudo-random generator,
not opacus' ``secure_mode``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import attrs
import torch
from torch.utils.data import DataLoader, TensorDataset

from privbench import Defense, Model, PrivbenchError, TensorData, Trainer, hookimpl
from privbench.helpers import seeded_generator, train_epochs

DEFAULT_EPSILON = 8.0
"""Target epsilon when neither ``epsilon`` nor ``noise_multiplier`` is given."""

_optional_positive = attrs.validators.optional(attrs.validators.gt(0))


def default_delta(n: int) -> float:
    """``min(1e-5, n ** -1.1)``: Abadi et al.'s 1e-5, kept below ``1/n`` on any dataset size
    (a delta near ``1/n`` would allow releasing one whole training sample)."""
    return min(1e-5, float(n) ** -1.1)


def _dp_errors(net: torch.nn.Module) -> list[str]:
    """opacus' objections to *net*, judged in training mode (as opacus trains it)."""
    from opacus.validators import ModuleValidator  # opacus on use: it takes a second to import

    was_training = net.training
    net.train()
    try:
        return [str(error) for error in ModuleValidator.validate(net, strict=False)]
    finally:
        net.train(was_training)


@attrs.frozen
class DPSGD(Defense):
    """DP-SGD with a target epsilon (noise calibrated by opacus) or a fixed noise multiplier.

    The recipe keeps its meaning: ``batch_size`` is the expected Poisson batch size,
    ``epochs * ceil(N / batch_size)`` steps, the recipe's optimizer, lr schedule and
    augmentation (a per-sample transform, so each clipped gradient still depends on one sample).
    The loop is the engine's (``privbench.helpers.train_epochs``) with Poisson batches, opacus'
    private optimizer and no autocast.
    """

    name: ClassVar[str] = "dp-sgd"
    description: ClassVar[str] = (
        "DP-SGD (Abadi et al. 2016) via opacus: per-sample clipping, Gaussian noise, accountant"
    )

    epsilon: float | None = attrs.field(default=None, validator=_optional_positive)
    """Target epsilon after all epochs, noise calibrated to it (8 without noise_multiplier).
    opacus' make_private_with_epsilon."""
    delta: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.gt(0), attrs.validators.lt(1)]),
    )
    """Target delta; None: min(1e-5, N^-1.1) for N training samples (always below 1/N)."""
    noise_multiplier: float | None = attrs.field(default=None, validator=_optional_positive)
    """Fixed noise standard deviation, in units of max_grad_norm, instead of a target epsilon.
    The epsilon is then what the accountant reports."""
    max_grad_norm: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Per-sample gradient clipping bound (L2 over all parameters)."""
    grad_sample_mode: Literal["hooks", "ew", "functorch"] = "hooks"
    """How opacus computes per-sample gradients: ``hooks`` (fastest), ``ew`` or ``functorch``.
    hooks suits the small built-in models; ew (torch's expanded weights) networks with in-place
    ops such as timm's ResNets, where hooks and functorch fail."""
    poisson_sampling: bool = True
    """Poisson batches, as the accountant assumes (false: shuffled batches of fixed size).
    Without them the reported epsilon is only an approximation."""
    accountant: Literal["prv", "rdp", "gdp"] = "prv"
    """opacus' accountant: prv (tightest), rdp (classic, looser), gdp (CLT approximation)."""

    def __attrs_post_init__(self) -> None:
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ValueError("give either epsilon or noise_multiplier, not both")
        if self.epsilon is None and self.noise_multiplier is None:
            object.__setattr__(self, "epsilon", DEFAULT_EPSILON)

    def prepare_model(self, model: Model) -> Model:
        """Batch norm mixes samples, so per-sample gradients do not exist: opacus swaps it for
        group norm (and other fixable layers for their DP-compatible equivalents)."""
        if _dp_errors(model.net):
            from opacus.validators import ModuleValidator

            model.net = ModuleValidator.fix(model.net)
            errors = _dp_errors(model.net)
            if errors:
                raise PrivbenchError(
                    "defense 'dp-sgd' cannot train this model: "
                    + "; ".join(" ".join(e.split()) for e in errors)
                )
        return model

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        with warnings.catch_warnings():
            # Expected here: seeded (not secure) noise, and opacus' hooks on the first layer.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            # The RDP accountant's largest order was optimal: its epsilon is an over-estimate
            # (safe), and the PRV accountant's log(0) at sampling rate 1 is handled by opacus.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="opacus.accountants")
            return self._fit(model, data, trainer)

    def _fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        from opacus import PrivacyEngine

        # Seeded before opacus wraps the model, for batches and augmentation; noise has its own.
        generator = seeded_generator(trainer.seed)
        noise = torch.Generator(device=trainer.device).manual_seed(trainer.seed + 1)
        recipe, n = trainer.recipe, len(data)
        delta = self.delta if self.delta is not None else default_delta(n)
        model.to(trainer.device).train()
        optimizer = trainer.make_optimizer(model)
        scheduler = trainer.make_scheduler(optimizer)
        # Only for opacus' bookkeeping (sample rate 1 / len(loader)); batches are drawn below.
        loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=recipe.batch_size)
        engine = PrivacyEngine(accountant=self.accountant)
        common: dict[str, Any] = dict(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=False,  # sampled here, with a seeded generator
            noise_generator=noise,
            grad_sample_mode=self.grad_sample_mode,
        )
        if self.noise_multiplier is not None:
            private, dp_optimizer, _ = engine.make_private(
                noise_multiplier=self.noise_multiplier, **common
            )
        else:
            private, dp_optimizer, _ = engine.make_private_with_epsilon(
                target_epsilon=self.epsilon, target_delta=delta, epochs=recipe.epochs, **common
            )
        rate, steps_per_epoch = 1.0 / len(loader), len(loader)

        def poisson(n: int, generator: torch.Generator) -> list[torch.Tensor]:
            """Each sample joins each step's batch with probability ``rate``, independently."""
            return [
                torch.nonzero(torch.rand(n, generator=generator) < rate).flatten()
                for _ in range(steps_per_epoch)
            ]

        x_all, y_all = data.x.to(trainer.device), data.y.to(trainer.device)
        try:
            final_loss = train_epochs(
                model,
                trainer,
                x_all,
                lambda xb, index: trainer.loss(private(xb), y_all[index]),
                batches=poisson if self.poisson_sampling else None,  # else shuffled, fixed size
                generator=generator,
                optimizer=dp_optimizer,
                scheduler=scheduler,
                mixed_precision=False,
            )
        except RuntimeError as err:
            if "inplace" in str(err) and self.grad_sample_mode != "ew":
                raise PrivbenchError(
                    "defense 'dp-sgd': this model modifies tensors in place, which opacus' "
                    f"'{self.grad_sample_mode}' mode cannot follow; use grad_sample_mode=ew"
                ) from None
            raise
        finally:
            dp_optimizer.zero_grad(set_to_none=True)
            private.to_standard_module()  # hooks and per-sample attributes gone: plain Model
        model.eval()
        return {
            "epsilon": float(engine.get_epsilon(delta)),
            "delta": delta,
            "noise_multiplier": float(dp_optimizer.noise_multiplier),
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": rate,
            "accountant": self.accountant,
            "final_train_loss": final_loss,
            "steps": recipe.epochs * steps_per_epoch,  # either sampling: ceil(N / batch) an epoch
        }


@hookimpl
def register_defenses(register):
    register(DPSGD)
