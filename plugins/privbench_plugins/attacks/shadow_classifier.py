"""The learned shadow-model attack of Shokri, Stronati, Song and Shmatikov (2017), "Membership
Inference Attacks against Machine Learning Models" (IEEE S&P; the authors' code:
csong27/membership-inference).

Threat model: ``logits`` access to the target (the paper's black box returns the prediction
vector, here the softmax of the logits); shadow models trained by the attacker with the target's
recipe, each on a random half of the population recorded in ``shadow_keep``.

The paper turns membership inference into binary classification. Each shadow model is queried on
its own training records (labelled *in*) and on records it did not train on (*out*); for every
class ``c`` an attack classifier learns, from the prediction vectors of shadow records of true
class ``c``, to tell *in* from *out* (one attack model per class, because a model's
output distribution differs from class to class). The target's prediction vector on a record of
class ``c`` then goes to classifier ``c``, whose predicted probability of *in* is the score.

What privbench follows and what it changes:

- The shadows' *in* and *out* records are the population's samples with the keep-mask as label
  (every shadow contributes all ``N`` samples, about half of each label), rather than disjoint
  shadow training and test sets: the engine's game, the one LiRA plays. Nothing of the target's
  membership enters the training of the attack classifiers.
- Features: the prediction vector, each entry logit-scaled, ``log p_c - log(1 - p_c)`` computed
  from the logits without rounding (LiRA's scaling, applied to every class). It is a monotone
  change of each entry, so the paper's probability vector and this one order records alike and
  boosted trees split them alike; but an overfit model's members and non-members differ in how
  close ``p_y`` is to 1 (``1 - p`` of 1e-6 against 1e-3, say), which raw probabilities squash
  into one value for a network or a linear model and float64 rounds away altogether past 1e-16.
  ``top_k=0`` (the default) keeps the whole vector in class order, as the paper; ``top_k=k``
  keeps the ``k`` largest entries, sorted (Salem et al. 2019, "ML-Leaks", find the top 3 nearly
  as informative). With one classifier per class the true class's position is fixed, so the
  unsorted vector loses nothing and sorting only discards which class is which.
- The attack classifier. The paper's attack models are neural networks (the authors' code also
  offers a softmax regression, its default). The default here is scikit-learn's
  ``HistGradientBoostingClassifier`` (100 rounds of 15-leaf trees, L2-regularised, no early
  stopping): non-linear like the paper's networks, indifferent to the scale of each feature,
  deterministic, and about a second on one core for 10 classes x 1,800 samples x 7 shadows (on
  the test pools the three classifiers stay within about 0.02 AUC of each other). ``mlp``
  (``MLPClassifier``, one hidden layer of 64 units, 100 Adam epochs, about 3 s there) and
  ``logistic`` (under 0.1 s) see standardised features. Each fit runs on one thread: the fits
  are small, and threads on busy cores only contend (8-20x slower on two).
- A class whose shadow records carry a single label (too few samples of it: with ``S`` shadows
  and ``n`` samples, about ``2**(1 - S n)`` of the time) has no classifier of its own; its samples
  go to one classifier trained on every class's records, with class-free features (the true
  class's entry, then the sorted vector). Where even that has one label, every score is the
  member fraction of the shadow records: a constant, no ranking.
- The score is ``predict_proba``'s member probability: classifiers of different classes are
  trained on about half IN records each, so their probabilities are on one scale.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import attrs
import numpy as np
import torch

from privbench import Access, AttackContext, ModelView, Signal, hookimpl
from privbench.helpers import mirror_averaged_logits

HIDDEN_UNITS = 64
"""Hidden units of the ``mlp`` attack classifier: one hidden layer, as the paper's attack
networks."""


def logit_scaled(view: ModelView, hflip: bool) -> np.ndarray:
    """``N x C`` logit-scaled softmax probabilities ``log p_c - log(1 - p_c)`` of one model on the
    population (logits averaged with the mirror's where ``hflip``), in float64.

    Exact where ``p_c`` rounds to 1: for the top class ``log(1 - p_c)`` is the ``logsumexp`` of
    the other logits minus that of all of them, and for the others (``p_c <= 1/2``)
    ``log1p(-p_c)`` is exact.
    """
    logits = mirror_averaged_logits(view, hflip, torch.float64)
    return logit_scale(logits).numpy()


def logit_scale(logits: torch.Tensor) -> torch.Tensor:
    """``log p - log(1 - p)`` of the softmax of ``N x C`` logits, per class, without rounding."""
    logits = logits.double()
    log_p = torch.log_softmax(logits, dim=1)
    top = logits.argmax(1, keepdim=True)
    others = logits.scatter(1, top, float("-inf"))
    log_rest_top = torch.logsumexp(others, 1, keepdim=True) - torch.logsumexp(logits, 1, True)
    log_1mp = torch.log1p(-log_p.exp().clamp(max=0.5)).scatter(1, top, log_rest_top)
    return log_p - log_1mp


def class_features(z: np.ndarray, top_k: int) -> np.ndarray:
    """A per-class classifier's features: the whole vector in class order (``top_k=0``), or the
    ``top_k`` largest entries in decreasing order."""
    if top_k == 0:
        return z
    return -np.sort(-z, axis=1)[:, : min(top_k, z.shape[1])]


def global_features(z: np.ndarray, y: np.ndarray, top_k: int) -> np.ndarray:
    """Class-free features for the classifier over all classes: the true class's entry, then the
    sorted vector (all of it for ``top_k=0``)."""
    true = z[np.arange(len(z)), y][:, None]
    return np.concatenate([true, class_features(-np.sort(-z, axis=1), top_k)], axis=1)


def make_classifier(kind: str, seed: int):
    """An unfitted scikit-learn binary classifier of *kind*, seeded."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gradient-boosting":
        return HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.1,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )
    if kind == "mlp":
        # No early stopping: its 10% validation split of a class's records is too noisy to stop on
        # (it cost 0.15 AUC on the overfit test pool).
        model = MLPClassifier(
            hidden_layer_sizes=(HIDDEN_UNITS,), alpha=1e-3, max_iter=100, random_state=seed
        )
    else:
        model = LogisticRegression(C=1.0, max_iter=1000)
    return make_pipeline(StandardScaler(), model)


def _member_probability(model, x: np.ndarray, members: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Fit *model* on records *x* labelled *members*; the IN probability of each row of *z*."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # The network may stop at max_iter before its loss settles; its scores are still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, members)
    return model.predict_proba(z)[:, list(model.classes_).index(True)]


def shadow_classifier_scores(
    target: np.ndarray,
    shadows: np.ndarray,
    keep: np.ndarray,
    labels: np.ndarray,
    *,
    classifier: str = "gradient-boosting",
    top_k: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Scores from the target's ``N x C`` features, the shadows' ``S x N x C``, their
    ``S x N`` keep-mask and the ``N`` true labels: per class, a classifier fitted on the shadows'
    vectors of that class's samples (label: IN that shadow) gives each target vector of the class
    its predicted probability of IN. Classes with a single label fall back as the module says.
    """
    from threadpoolctl import threadpool_limits

    keep = np.asarray(keep, dtype=bool)
    labels = np.asarray(labels, dtype=np.int64)
    num_shadows, n = keep.shape
    if shadows.shape[:2] != (num_shadows, n) or target.shape != shadows.shape[1:]:
        raise ValueError(
            f"target {target.shape}, shadows {shadows.shape} and keep-mask {keep.shape} disagree"
        )
    rows_z = shadows.reshape(num_shadows * n, -1)  # shadow-major: row s * n + i
    rows_y = np.tile(labels, num_shadows)
    rows_in = keep.reshape(-1)
    scores = np.full(n, np.nan)
    fallback = []
    # A class's fit is small: OpenMP threads cost more than they bring (8x slower on 2 busy cores).
    with threadpool_limits(limits=1):
        for c in np.unique(labels):
            mine, rows = labels == c, rows_y == c
            if rows_in[rows].all() or not rows_in[rows].any():
                fallback.append(c)
                continue
            scores[mine] = _member_probability(
                make_classifier(classifier, (seed + int(c)) % 2**32),
                class_features(rows_z[rows], top_k),
                rows_in[rows],
                class_features(target[mine], top_k),
            )
        if fallback:
            mine = np.isin(labels, fallback)
            if rows_in.all() or not rows_in.any():
                scores[mine] = rows_in.mean()
            else:
                scores[mine] = _member_probability(
                    make_classifier(classifier, seed % 2**32),
                    global_features(rows_z, rows_y, top_k),
                    rows_in,
                    global_features(target[mine], labels[mine], top_k),
                )
    return scores


@attrs.frozen
class ShadowClassifier:
    """Shokri et al. (2017): per-class attack classifiers trained on the shadow models' prediction
    vectors for their own members and non-members; score = predicted member probability.

    One shadow model suffices (its keep-mask gives both labels); more give each classifier more
    records and more variety of models to generalise over.
    """

    name: ClassVar[str] = "shadow-classifier"
    description: ClassVar[str] = (
        "Shokri et al. 2017: per-class classifiers learn IN vs OUT from shadow prediction vectors"
    )
    access: ClassVar[Access] = Access.LOGITS
    min_shadows: ClassVar[int] = 1

    classifier: Literal["gradient-boosting", "mlp", "logistic"] = "gradient-boosting"
    """The scikit-learn attack model trained for each class.

    Boosted trees (``HistGradientBoostingClassifier``), a one-hidden-layer network
    (``MLPClassifier``) or logistic regression; the latter two on standardised features."""
    top_k: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Features: the whole probability vector in class order (0), or its k largest, sorted.

    Each entry logit-scaled, ``log p - log(1 - p)``, which orders records as ``p`` does."""
    hflip: bool = False
    """Average the logits of the image and its mirror (only where mirroring keeps the label)."""

    def signals(self, hflip_preserves_label: bool) -> tuple[Signal, ...]:
        return Signal.queries(self.hflip)

    def score(self, context: AttackContext) -> np.ndarray:
        return shadow_classifier_scores(
            logit_scaled(context.target, self.hflip),
            np.stack([logit_scaled(view, self.hflip) for view in context.shadows]),
            context.shadow_keep,
            context.population.y.numpy(),
            classifier=self.classifier,
            top_k=self.top_k,
            seed=context.seed,
        )


@hookimpl
def register_attacks(register):
    register(ShadowClassifier)
