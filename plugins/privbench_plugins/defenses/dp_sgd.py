"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016).

Each step samples a Poisson batch, clips every per-sample gradient to ``max_grad_norm``, adds
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` and lets the recipe's
optimizer take the step; opacus' accountant turns (sampling rate, noise, steps) into the
(epsilon, delta) guarantee that :meth:`DPSGD.fit` records, so that an audit can print the tight
bounds that guarantee puts on every attack metric beside the measured ones.

The clipping is privbench's book-keeping (:mod:`privbench_plugins.defenses.dp_clipping`: one
backward pass, no per-sample gradients in memory) wherever the model's layers allow it, else
opacus' ``PrivacyEngine`` (``grad_sample_mode`` picks). Both draw the same noise from the same
generator, and opacus computes the noise multiplier and the epsilon for both, so the modes
train the same model to rounding and report the same epsilon.

Randomness is seeded (sampling, augmentation and noise follow ``trainer.seed``), as the audit
needs reproducible models; the guarantee is then the usual one for a pseudo-random generator,
not opacus' ``secure_mode``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import torch
from torch.utils.data import DataLoader, TensorDataset

from privbench import Defense, Model, PrivbenchError, TensorData, Trainer, hookimpl
from privbench.helpers import seeded_generator, train_epochs
from privbench_plugins.defenses import dp_clipping

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

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


@functools.lru_cache(maxsize=64)
def calibrated_noise(
    epsilon: float, delta: float, sample_rate: float, epochs: int, accountant: str
) -> float:
    """The noise multiplier that spends *epsilon* at *delta* after *epochs* epochs at
    *sample_rate*, by opacus' ``get_noise_multiplier`` (what ``make_private_with_epsilon``
    calls). Remembered: with the PRV accountant it takes seconds, the same for every model of
    a pool."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant=accountant,
        )
    )


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
    grad_sample_mode: Literal["auto", "book-keeping", "hooks", "ew", "functorch"] = "auto"
    """How per-sample gradients are clipped: book-keeping (one pass) or an opacus mode.

    ``book-keeping``: privbench's one-pass clipping (Bu et al. 2023, ``dp_clipping``), no
    per-sample gradients in memory, in-place ops allowed; Linear, Conv2d, GroupNorm and
    LayerNorm layers only. ``hooks``, ``ew``, ``functorch``: opacus' modes, which store every
    per-sample gradient (the reference; ew also follows in-place ops). ``auto``: book-keeping
    where every layer allows it, else hooks. Both train the same model to rounding and spend
    the same epsilon (tests/test_dp_clipping.py)."""
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

    def resolved_mode(self, model: Model) -> str:
        """The clipping this model gets: ``auto`` is book-keeping where every layer with
        parameters is one it knows, else opacus' hooks."""
        if self.grad_sample_mode != "auto":
            return self.grad_sample_mode
        return "hooks" if dp_clipping.unsupported(model) else "book-keeping"

    def _fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        # Seeded before the model is wrapped, for batches and augmentation; noise has its own.
        generator = seeded_generator(trainer.seed)
        noise = torch.Generator(device=trainer.device).manual_seed(trainer.seed + 1)
        recipe, n = trainer.recipe, len(data)
        delta = self.delta if self.delta is not None else default_delta(n)
        model.to(trainer.device).train()
        optimizer = trainer.make_optimizer(model)
        scheduler = trainer.make_scheduler(optimizer)
        steps_per_epoch = math.ceil(n / recipe.batch_size)
        rate = 1.0 / steps_per_epoch  # opacus' sample rate: 1 / len(data loader)

        def poisson(n: int, generator: torch.Generator) -> list[torch.Tensor]:
            """Each sample joins each step's batch with probability ``rate``, independently."""
            return [
                torch.nonzero(torch.rand(n, generator=generator) < rate).flatten()
                for _ in range(steps_per_epoch)
            ]

        x_all, y_all = data.x.to(trainer.device), data.y.to(trainer.device)
        started = time.perf_counter()
        sigma = self.noise_multiplier
        if sigma is None:  # what make_private_with_epsilon computes
            assert self.epsilon is not None
            sigma = calibrated_noise(self.epsilon, delta, rate, recipe.epochs, self.accountant)
        accounting = time.perf_counter() - started
        mode = self.resolved_mode(model)
        run = _Run(
            defense=self,
            mode=mode,
            model=model,
            trainer=trainer,
            optimizer=optimizer,
            loss=lambda module, xb, index: trainer.loss(module(xb), y_all[index]),
            loop=dict(
                inputs=x_all,
                batches=poisson if self.poisson_sampling else None,  # else fixed-size
                generator=generator,
                scheduler=scheduler,
                mixed_precision=False,
            ),
            noise=noise,
            noise_multiplier=sigma,
            rate=rate,
            size=n,
        )
        try:
            train = _book_keeping if mode == "book-keeping" else _opacus
            final_loss, accountant = train(run)
        except RuntimeError as err:
            if "inplace" in str(err) and mode not in ("ew", "book-keeping"):
                raise PrivbenchError(
                    "defense 'dp-sgd': this model modifies tensors in place, which opacus' "
                    f"'{mode}' mode cannot follow; use grad_sample_mode=book-keeping or ew"
                ) from None
            raise
        except dp_clipping.UnsupportedModelError as err:
            raise PrivbenchError(
                f"defense 'dp-sgd': {err}; use grad_sample_mode=hooks or ew"
            ) from None
        model.eval()
        started = time.perf_counter()
        epsilon = float(accountant.get_epsilon(delta))
        accounting += time.perf_counter() - started
        return {
            "epsilon": epsilon,
            "delta": delta,
            "noise_multiplier": sigma,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": rate,
            "accountant": self.accountant,
            "grad_sample_mode": mode,
            "final_train_loss": final_loss,
            "accounting_seconds": accounting,  # calibrating the noise and computing epsilon
            "steps": recipe.epochs * steps_per_epoch,  # either sampling: ceil(N / batch) an epoch
        }


@attrs.frozen
class _Run:
    """One private training, as both clipping paths take it."""

    defense: DPSGD
    mode: str
    model: Model
    trainer: Trainer
    optimizer: torch.optim.Optimizer
    loss: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    """``(module, inputs, index) -> mean loss`` of a batch through *module*."""
    loop: dict[str, Any]
    """The rest of ``train_epochs``' arguments: inputs, batches, generator, scheduler."""
    noise: torch.Generator
    noise_multiplier: float
    rate: float
    size: int


def _book_keeping(run: _Run) -> tuple[float, IAccountant]:
    """privbench's clipping, with opacus' accountant stepped as make_private would step it, so
    that epsilon is the one the opacus modes report. Returns the final training loss and the
    accountant."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(run.defense.accountant)
    clipping = dp_clipping.BookKeeping(run.model, run.defense.max_grad_norm)
    private = _NoisyClippedOptimizer(
        run.optimizer,
        clipping,
        noise_std=run.noise_multiplier * run.defense.max_grad_norm,
        expected_batch=int(run.size * run.rate),  # as opacus' make_private computes it
        generator=run.noise,
        on_step=lambda: accountant.step(
            noise_multiplier=run.noise_multiplier, sample_rate=run.rate
        ),
    )
    with clipping.active():
        final_loss = train_epochs(
            run.model,
            run.trainer,
            batch_loss=lambda xb, index: run.loss(run.model, xb, index),
            optimizer=private,  # type: ignore[arg-type]
            **run.loop,
        )
    return final_loss, accountant


class _NoisyClippedOptimizer:
    """What ``train_epochs`` steps in book-keeping mode: each step takes the batch's clipped
    per-sample gradient sums, adds Gaussian noise of ``noise_std`` per parameter (drawn from
    *generator* in the optimizer's parameter order, as opacus does), divides by the expected
    batch size and lets the recipe's optimizer step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        clipping: dp_clipping.BookKeeping,
        *,
        noise_std: float,
        expected_batch: int,
        generator: torch.Generator,
        on_step: Callable[[], None],
    ) -> None:
        self.optimizer = optimizer
        self.clipping = clipping
        self.noise_std = noise_std
        self.expected_batch = expected_batch
        self.generator = generator
        self.on_step = on_step
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        sums, _ = self.clipping.clipped_sum()
        for p in self.params:
            total = sums[p]
            if self.noise_std > 0:
                total = total + torch.normal(
                    0.0, self.noise_std, p.shape, device=p.device, generator=self.generator
                )
            p.grad = (total / self.expected_batch).view_as(p)
        self.optimizer.step()
        self.on_step()


def _opacus(run: _Run) -> tuple[float, IAccountant]:
    """opacus' PrivacyEngine in one of its per-sample gradient modes (the reference). Returns
    the final training loss and the engine's accountant."""
    from opacus import PrivacyEngine

    # Only for opacus' bookkeeping (sample rate 1 / len(loader)); batches are drawn by the loop.
    loader = DataLoader(
        TensorDataset(torch.arange(run.size)), batch_size=run.trainer.recipe.batch_size
    )
    engine = PrivacyEngine(accountant=run.defense.accountant)
    private, dp_optimizer, _ = engine.make_private(
        module=run.model,
        optimizer=run.optimizer,
        data_loader=loader,
        noise_multiplier=run.noise_multiplier,
        max_grad_norm=run.defense.max_grad_norm,
        poisson_sampling=False,  # sampled by the loop, with a seeded generator
        noise_generator=run.noise,
        grad_sample_mode=run.mode,
    )
    try:
        final_loss = train_epochs(
            run.model,
            run.trainer,
            batch_loss=lambda xb, index: run.loss(private, xb, index),
            optimizer=dp_optimizer,
            **run.loop,
        )
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        private.to_standard_module()  # hooks and per-sample attributes gone: plain Model
    return final_loss, engine.accountant


@hookimpl
def register_defenses(register):
    register(DPSGD)
