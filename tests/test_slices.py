"""Slicing (per class, by correct classification, by a user's column), the most vulnerable
samples, and the warnings a careful auditor gives beside the numbers."""

from __future__ import annotations

import csv
import sqlite3

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import privbench
from privbench.analysis.slices import chance_auc_noise, slice_metrics

SMALL = dict(population=200, shadows=3, epochs=5, seed=2)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory) -> privbench.AuditResult:
    workspace = tmp_path_factory.mktemp("sliced")
    groups = workspace / "groups.csv"
    with groups.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "parity"])
        writer.writerows([i, "even" if i % 2 == 0 else "odd"] for i in range(1257))
    return privbench.audit(
        attacks=["loss", "lira"], slices=["class", "correct", f"{groups}:parity"],
        workspace=workspace, targets=2, **SMALL,
    )  # fmt: skip


def test_per_class_counts_add_up_and_each_auc_is_the_auc_of_its_samples(sliced, digits):
    for attack in sliced.attacks:
        by_class = [s for s in attack.slices if s.slice == "class"]
        assert [s.value for s in by_class] == [str(c) for c in range(10)]
        assert sum(s.members for s in by_class) == attack.metrics.n_members
        assert sum(s.non_members for s in by_class) == attack.metrics.n_nonmembers
        scores = attack.scores
        labels = digits.train.y.numpy()[scores.sample]
        for part in by_class:
            inside = labels == int(part.value)
            expected = roc_auc_score(scores.member[inside], scores.score[inside])
            assert part.metrics.auc == pytest.approx(expected, abs=1e-12)


def test_correct_and_user_slices_partition_the_entries(sliced):
    attack = sliced.attack("loss")
    for name, values in (("correct", {"false", "true"}), ("parity", {"even", "odd"})):
        parts = [s for s in attack.slices if s.slice == name]
        assert {s.value for s in parts} <= values
        assert sum(s.members + s.non_members for s in parts) == len(attack.scores)
    even = next(s for s in attack.slices if s.slice == "parity" and s.value == "even")
    inside = attack.scores.sample % 2 == 0
    assert even.members == int(attack.scores.member[inside].sum())


def test_slices_round_trip_and_reach_the_database(sliced):
    assert privbench.load_run(sliced.path) == sliced
    database = sliced.path.parent.parent / "privbench.db"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT slice, value, members, auc FROM slices WHERE run_id = ? AND attack = 'loss'",
            (sliced.run_id,),
        ).fetchall()
    parts = sliced.attack("loss").slices
    assert len(rows) == len(parts)
    assert {(r[0], r[1]) for r in rows} == {(s.slice, s.value) for s in parts}
    assert "per slice" in str(sliced)


def test_a_slice_without_non_members_has_counts_but_no_metrics():
    scores = np.array([0.1, 0.2, 0.9, 0.8])
    member = np.array([True, True, False, True])
    parts = slice_metrics(scores, member, {"g": np.array(["a", "a", "b", "b"])})
    a, b = parts
    assert (a.members, a.non_members, a.metrics) == (2, 0, None)
    assert b.metrics is not None and b.metrics.auc == 0.0


def test_unknown_slices_are_one_line_errors(tmp_path):
    for slices, message in ((["klass"], "unknown slice 'klass'"),
                            ([f"{tmp_path}/none.csv:x"], "does not exist")):  # fmt: skip
        with pytest.raises(privbench.PrivbenchError, match=message):
            privbench.audit(slices=slices, workspace=tmp_path, **SMALL)


def test_vulnerable_samples_are_the_members_with_the_highest_scores(sliced):
    attack = sliced.attack("lira")
    scores = attack.scores
    top = np.max(scores.score[scores.member])
    best = scores.sample[scores.member][scores.score[scores.member] == top]
    assert attack.vulnerable[0] in best
    assert len(attack.vulnerable) == len(set(attack.vulnerable)) == 16
    assert set(attack.vulnerable) <= set(scores.sample[scores.member].tolist())
    from safetensors.torch import load_file

    stored = load_file(str(sliced.path / "vulnerable-images.safetensors"))
    assert stored["lira"].shape == (16, 1, 8, 8)  # their images, for the run's page


def test_warnings_say_when_a_number_cannot_be_read_as_it_reads(sliced):
    text = "\n".join(sliced.warnings)
    assert "rests on 200 non-members" in text  # fewer than 1,000: TPR at 0.1% FPR is at zero
    assert "attack lira used 3 reference models per target; its paper uses 64" in text
    assert all("AUC" not in w or "below 0.5" in w for w in sliced.warnings)
    assert "warning: TPR at 0.1% FPR" in str(sliced)


def test_an_auc_far_below_chance_is_flagged(tmp_path):
    rng = np.random.default_rng(0)
    member = rng.random(2000) < 0.5
    logits = np.zeros((2000, 2))
    logits[:, 0] = np.where(member, -2.0, 2.0) + rng.normal(size=2000)  # members: high loss
    result = privbench.audit_outputs(
        logits=logits, labels=np.zeros(2000, dtype=int), member=member, attacks=["loss"],
        workspace=tmp_path,
    )  # fmt: skip
    assert result.attack("loss").metrics.auc < 0.2
    assert any("below 0.5 by more than 3 standard errors" in w for w in result.warnings)
    assert chance_auc_noise(1000, 1000) == pytest.approx(np.sqrt(2001 / 12e6))


def test_outputs_alone_are_sliced_too(tmp_path):
    rng = np.random.default_rng(1)
    member = rng.random(400) < 0.5
    labels = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), labels] += np.where(member, 2.0, 1.0)
    result = privbench.audit_outputs(
        logits=logits, labels=labels, member=member, attacks=["loss"], slices=["class"],
        workspace=tmp_path,
    )  # fmt: skip
    parts = result.attack("loss").slices
    assert [p.members for p in parts] == [int(member[labels == c].sum()) for c in range(3)]
    with pytest.raises(privbench.PrivbenchError, match="losses alone say neither"):
        privbench.audit_outputs(losses=rng.random(400), member=member, slices=["class"],
                                workspace=tmp_path)  # fmt: skip
