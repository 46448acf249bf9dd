"""Knowledge distillation as a membership-inference defense: release a student that never saw
the private labels, only a teacher's soft labels on a transfer set.

The loss is Hinton et al.'s ("Distilling the Knowledge in a Neural Network", 2015):
``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, optionally mixed with the
cross-entropy on hard labels (weight ``alpha``; 0 by default, soft labels only, as in DMP and
SELENA, whose students never fit the private labels directly). The default temperature is 1,
DMP's choice (Shejwalkar and Houmansadr, "Membership Privacy for Machine Learning Models
Through Knowledge Distillation", AAAI 2021; ``distil_temp=1.0`` in their code,
github vrt1shjwlkr/AAAI21-MIA-Defense) and SELENA's (plain softmax outputs as soft labels);
Hinton et al. raise it (2-20) to transfer more of the teacher's dark knowledge.

Transfer sets (option ``transfer``):

- ``reference``: DMP proper. The teacher labels the unlabelled reference data the engine hands
  every defense (``trainer.reference``: the train split outside the audit's population, never
  trained on or scored); the student never sees a private input. DMP also keeps only the
  reference samples the teacher labels with low entropy; we keep them all.
- ``self-split``: SELENA's Split-AI, simplified (Tang et al., "Mitigating Membership Inference
  Attacks by Self-Distillation Through a Novel Ensemble Architecture", USENIX Security 2022).
  The private data is split into ``splits`` disjoint parts and one teacher trains on all but
  each part; a sample's soft label comes only from the teacher that did not see it. SELENA
  trains K=25 models with each sample left out of L=10 (we use K=splits, L=1) and also has an
  adaptive ensemble inference that we drop: only the distilled student is released. Costs
  ``splits`` teacher trainings plus the student. Needs no data beyond the private set.
- ``mixup``: a data-free stand-in for DMP's reference set when the population is the whole
  split (no reference data): convex combinations ``l x_i + (1 - l) x_j`` of random private
  pairs, ``l ~ Beta(mixup_alpha, mixup_alpha)``, drawn afresh each epoch and labelled live by
  the teacher. Mixtures near a private input carry its memorised label: weaker than DMP.
- ``private``: plain distillation on the private inputs themselves. The teacher's soft labels
  on its own training data are as confident as the hard labels it memorised, so the student
  inherits most of the leakage: a baseline, not a defense.

Teachers are deep copies of the untrained model trained by ``trainer.fit`` (same recipe and
seed); fixed transfer sets (private, self-split, reference) are labelled once, in eval mode, on
clean inputs, and the student trains on augmented inputs with those labels. The student trains
in the engine's epoch loop (``privbench.helpers.train_epochs``): ``trainer.recipe`` epochs and
batches, ``trainer.make_optimizer`` and ``make_scheduler``, ``trainer.augment``, seeded by
``trainer.seed``, on ``trainer.device``, with the distillation loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from privbench import Defense, Model, PrivbenchError, TensorData, Trainer, hookimpl
from privbench.helpers import accuracy, model_outputs, train_epochs

Transfer = Literal["self-split", "reference", "mixup", "private"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float = 1.0,
    hard: torch.Tensor | None = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """Batch mean of ``T^2 * KL(p || softmax(student / T))`` for soft labels ``p`` (the
    teacher's ``softmax(logits / T)``), mixed as ``(1 - alpha) * KD + alpha * CE(student,
    hard)``; ``hard`` is class indices or class probabilities."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    p = teacher_probs.float()
    kl = (torch.xlogy(p, p) - p * log_q).sum(1).mean() * temperature**2
    if alpha == 0.0 or hard is None:
        return kl
    return (1.0 - alpha) * kl + alpha * F.cross_entropy(student_logits.float(), hard)


def soft_labels(teacher: Model, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(teacher(x) / T)`` in eval mode, batched, on the teacher's device."""
    return model_outputs(teacher, x, lambda logits: F.softmax(logits.float() / temperature, dim=1))


@attrs.frozen
class Distillation(Defense):
    """Release a student distilled from teacher(s) trained on the private data."""

    name: ClassVar[str] = "distillation"
    description: ClassVar[str] = (
        "Knowledge distillation (Hinton 2015) on a transfer set: DMP (AAAI'21), SELENA-style split"
    )

    transfer: Transfer = attrs.field(
        default="self-split",
        validator=attrs.validators.in_(("self-split", "reference", "mixup", "private")),
    )
    """The student's transfer set: ``self-split``, ``reference``, ``mixup`` or ``private``.
    self-split (SELENA-like: labels from teachers that did not see the sample), reference
    (DMP: the engine's unlabelled reference data), mixup (data-free stand-in for DMP) or
    private (plain KD on the private inputs; weak as a defense)."""
    temperature: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Softmax temperature of teacher and student in the loss (DMP: 1; Hinton: 2-20)."""
    alpha: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    """Weight of the hard-label cross-entropy (0: soft labels only, as DMP and SELENA)."""
    splits: int = attrs.field(default=4, validator=attrs.validators.ge(2))
    """self-split: disjoint parts of the private data, one teacher trained without each."""
    mixup_alpha: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """mixup: the Beta(a, a) parameter of the mixing weight (1: uniform)."""

    def fit(self, model: Model, data: TensorData, trainer: Trainer) -> dict[str, Any]:
        model.to(trainer.device)
        initial = copy.deepcopy(model)  # every teacher starts from the untrained weights
        meta: dict[str, Any] = {"transfer": self.transfer, "temperature": self.temperature}
        teacher: Model | None = None
        hard = data.y  # for alpha > 0 (mixup mixes them; reference has its own)
        if self.transfer == "self-split":
            generator = torch.Generator().manual_seed(trainer.seed)
            parts = torch.randperm(len(data), generator=generator).tensor_split(self.splits)
            targets: torch.Tensor | None = None
            teacher_acc, held_out_acc = [], []
            for part in parts:
                rest = torch.ones(len(data), dtype=torch.bool)
                rest[part] = False
                seen = data.subset(torch.nonzero(rest).flatten())
                split_teacher = copy.deepcopy(initial)
                trainer.fit(split_teacher, seen)
                teacher_acc.append(accuracy(split_teacher, seen.x, seen.y))
                held_out_acc.append(accuracy(split_teacher, data.x[part], data.y[part]))
                probs = soft_labels(split_teacher, data.x[part], self.temperature).cpu()
                if targets is None:
                    targets = torch.zeros(len(data), probs.shape[1])
                targets[part] = probs
                del split_teacher
            transfer_x = data.x
            meta.update(teacher_train_accuracy=teacher_acc, teacher_held_out_accuracy=held_out_acc)
        else:
            targets = None
            teacher = copy.deepcopy(initial)
            trainer.fit(teacher, data)
            meta["teacher_train_accuracy"] = accuracy(teacher, data.x, data.y)
            transfer_x = data.x
            if self.transfer == "reference":
                reference = getattr(trainer, "reference", None)
                if reference is None or len(reference) == 0:
                    raise PrivbenchError(
                        "defense 'distillation': transfer=reference needs reference data (the "
                        "train split outside the population); this audit's population is the "
                        "whole split: give a smaller --population, or use transfer=self-split "
                        "or mixup"
                    )
                transfer_x, hard = reference.x, reference.y
                meta["reference_size"] = len(reference)
            if self.transfer != "mixup":
                targets = soft_labels(teacher, transfer_x, self.temperature).cpu()
        meta["final_distillation_loss"] = self._train_student(
            model, trainer, transfer_x, targets, hard, teacher
        )
        meta["student_train_accuracy"] = accuracy(model, data.x, data.y)
        model.eval()
        return meta

    def _train_student(
        self,
        model: Model,
        trainer: Trainer,
        x: torch.Tensor,
        soft: torch.Tensor | None,
        hard: torch.Tensor,
        teacher: Model | None,
    ) -> float:
        """The engine's epoch loop (``privbench.helpers.train_epochs``) on the distillation loss
        of fixed soft labels, or (``soft`` None: mixup) of a transfer set drawn afresh before
        every epoch's batches and labelled live by ``teacher``."""
        device = trainer.device
        x_all, hard_all = x.to(device), hard.to(device)
        inputs: torch.Tensor | Callable[[torch.Generator], torch.Tensor] = x_all
        if soft is None and teacher is not None:
            mixup = _Mixup(
                teacher, x_all, hard_all, self.temperature, self.mixup_alpha, trainer.seed
            )
            inputs, labels = mixup.draw, mixup.labels
        elif soft is not None:
            labels = _Labels(soft.to(device), hard_all)
        else:
            raise ValueError("mixup needs the teacher")

        def loss(xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return distillation_loss(
                model(xb), labels.soft[index], self.temperature, labels.hard[index], self.alpha
            )

        return train_epochs(model, trainer, inputs, loss)


@attrs.define
class _Labels:
    """The current transfer set's soft labels (class probabilities) and hard labels (class
    indices, or probabilities for mixed pairs), on the training device."""

    soft: torch.Tensor
    hard: torch.Tensor


class _Mixup:
    """A fresh mixup transfer set per epoch: convex combinations ``l x_i + (1 - l) x_j`` of
    random pairs (the partners from the loop's generator, ``l ~ Beta(a, a)`` from a numpy
    generator of the same seed), soft-labelled live by the teacher, hard labels mixed alike."""

    def __init__(
        self,
        teacher: Model,
        x: torch.Tensor,
        hard: torch.Tensor,
        temperature: float,
        alpha: float,
        seed: int,
    ) -> None:
        self.teacher, self.x, self.y = teacher, x, hard
        self.temperature, self.alpha = temperature, alpha
        self.rng = np.random.default_rng(seed)
        self.labels = _Labels(torch.empty(0), torch.empty(0))

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's mixed images; their labels go to :attr:`labels`."""
        n, device = len(self.x), self.x.device
        partner = torch.randperm(n, generator=generator).to(device)
        lam = torch.from_numpy(self.rng.beta(self.alpha, self.alpha, n))
        lam = lam.float().to(device).view(-1, 1, 1, 1)
        mixed = lam * self.x + (1 - lam) * self.x[partner]
        soft = soft_labels(self.teacher, mixed, self.temperature)
        classes, lam1 = soft.shape[1], lam.view(-1, 1)
        hard = lam1 * F.one_hot(self.y, classes) + (1 - lam1) * F.one_hot(self.y[partner], classes)
        self.labels.soft, self.labels.hard = soft, hard  # in place: the loss holds this object
        return mixed


@hookimpl
def register_defenses(register):
    register(Distillation)
