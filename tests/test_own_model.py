"""Auditing what the user brings: a model trained with plain PyTorch (not with privbench),
saved as safetensors with its member indices, audited through the CLI and through Python; and
the same model's outputs alone, which give the same loss-attack AUC exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from privbench_plugins.models.small import MLP
from safetensors.torch import save_file

import privbench

MEMBERS, POPULATION, REFERENCES = 100, 200, 16


def _train(x: torch.Tensor, y: torch.Tensor, mean, std, classes: int = 10, seed: int = 0):
    """The user's own training loop (plain PyTorch; the architecture is privbench's ``mlp``,
    fed images normalised by the dataset's mean and std, as privbench feeds them)."""
    torch.manual_seed(seed)
    net = MLP().create((1, 8, 8), classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 30)
    for _ in range(30):
        for batch in torch.randperm(len(y)).split(64):
            loss = torch.nn.functional.cross_entropy(net((x[batch] - mean) / std), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    return net.eval()


@pytest.fixture(scope="module")
def own(tmp_path_factory, digits) -> dict:
    """A model trained elsewhere: its weights, its member indices, and the data it saw."""
    folder = tmp_path_factory.mktemp("own")
    members = np.sort(np.random.default_rng(0).permutation(len(digits.train))[:MEMBERS])
    mean = torch.tensor(digits.mean).view(1, -1, 1, 1)
    std = torch.tensor(digits.std).view(1, -1, 1, 1)
    net = _train(digits.train.x[members], digits.train.y[members], mean, std)
    weights = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    np.save(folder / "members.npy", members)
    return {"folder": folder, "weights": weights, "members": members, "net": net,
            "mean": mean, "std": std}  # fmt: skip


def _flags(own: dict, *more: str) -> list[str]:
    return ["run", "--target", str(own["weights"]), "--members", str(own["folder"] /
            "members.npy"), "--model", "mlp", "--population", str(POPULATION), *more]  # fmt: skip


@pytest.fixture(scope="module")
def cli_result(own, tmp_path_factory) -> privbench.AuditResult:
    workspace = tmp_path_factory.mktemp("cli-ws")
    from privbench.cli import main  # in this process; run_cli needs a test's own capsys

    with pytest.raises(SystemExit) as exited:
        main(_flags(own, "-a", "loss", "-a", "lira", "--shadows", str(REFERENCES), "-q",
                    "-w", str(workspace)))  # fmt: skip
    assert exited.value.code in (0, None)
    return privbench.load_run("latest", workspace=workspace)


def test_the_cli_audits_the_model_with_reference_models_only(cli_result, own):
    result = cli_result
    loss, lira = result.attack("loss"), result.attack("lira")
    assert loss.metrics.auc > 0.6, loss.metrics  # the overfit model leaks to the loss attack
    assert lira.metrics.auc > loss.metrics.auc + 0.03, (lira.metrics.auc, loss.metrics.auc)
    assert result.spec.target["members"] == MEMBERS and result.spec.targets == 1
    assert result.training.trained == REFERENCES  # the target itself is never trained
    assert result.utility.train_accuracy == 1.0
    assert len(loss.scores) == POPULATION and loss.scores.member.sum() == MEMBERS
    assert set(own["members"]) <= set(loss.scores.sample.tolist())
    text = str(result)
    assert "your target (100 members) + 16 reference model(s)" in text
    assert "only as good as its match" in text  # the note on reference models' recipe
    stored = list((result.path.parent.parent / "models").glob("*/*/meta.json"))
    assert len(stored) == REFERENCES


def test_python_gives_the_cli_numbers_with_members_as_indices_or_a_mask(
    cli_result, own, digits, tmp_path
):
    mask = np.zeros(len(digits.train), dtype=bool)
    mask[own["members"]] = True
    for members in (own["members"], mask):
        result = privbench.audit(
            target=own["weights"], members=members, model="mlp", attacks=["loss", "lira"],
            shadows=REFERENCES, population=POPULATION, workspace=tmp_path,
        )  # fmt: skip
        for ours, theirs in zip(result.attacks, cli_result.attacks, strict=True):
            assert ours.metrics == theirs.metrics
    assert result.training.trained == 0  # the reference models are in the store by now


def test_attacks_without_reference_models_train_nothing(own, tmp_path):
    result = privbench.audit(
        target=own["weights"], members=own["members"], model="mlp", attacks=["loss"],
        workspace=tmp_path,
    )  # fmt: skip
    assert result.spec.shadows == 0 and result.training.trained == 0
    assert any("none are trained" in note for note in result.notes)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def _logits(own: dict, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return own["net"]((x - own["mean"]) / own["std"])


def test_outputs_alone_give_the_same_loss_auc_exactly(cli_result, own, digits, tmp_path):
    samples = cli_result.attack("loss").scores
    x, y = digits.train.x[samples.sample], digits.train.y[samples.sample]
    logits = _logits(own, x)
    result = privbench.audit_outputs(
        logits=logits, labels=y, member=samples.member, sample_ids=samples.sample,
        attacks=["loss"], workspace=tmp_path,
    )  # fmt: skip
    assert result.attack("loss").metrics.auc == cli_result.attack("loss").metrics.auc
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    from_losses = privbench.audit_outputs(
        losses=losses, member=samples.member, attacks=["loss"], workspace=tmp_path
    )
    assert from_losses.attack("loss").metrics.auc == pytest.approx(
        result.attack("loss").metrics.auc, abs=1e-9
    )
    assert np.isnan(from_losses.utility.train_accuracy)  # losses do not say what was predicted


def test_outputs_files_through_the_cli(cli_result, own, digits, tmp_path, capsys):
    samples = cli_result.attack("loss").scores
    y = digits.train.y[samples.sample]
    logits = _logits(own, digits.train.x[samples.sample])
    npz = tmp_path / "outputs.npz"
    np.savez(npz, logits=logits.numpy(), labels=y.numpy(), member=samples.member,
             sample=samples.sample)  # fmt: skip
    code, _, err = run_cli(capsys, "outputs", str(npz), "-a", "loss", "-w", str(tmp_path / "w"))
    assert code == 0, err
    loaded = privbench.load_run("latest", workspace=tmp_path / "w")
    assert loaded.attack("loss").metrics.auc == cli_result.attack("loss").metrics.auc
    assert (loaded.attack("loss").scores.sample == samples.sample).all()
    table = tmp_path / "outputs.csv"
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "member", "label", "loss"])
        writer.writerows(zip(samples.sample, samples.member.astype(int), y.tolist(), losses,
                             strict=True))  # fmt: skip
    code, _, err = run_cli(capsys, "outputs", str(table), "-a", "loss", "-w", str(tmp_path / "c"))
    assert code == 0, err
    from_csv = privbench.load_run("latest", workspace=tmp_path / "c")
    assert from_csv.attack("loss").metrics.auc == pytest.approx(
        loaded.attack("loss").metrics.auc, abs=1e-6
    )


def test_reference_outputs_serve_lira_and_rmia(cli_result, own, digits, tmp_path):
    samples = cli_result.attack("loss").scores
    x, y = digits.train.x[samples.sample], digits.train.y[samples.sample]
    rng = np.random.default_rng(1)
    keep = np.stack([rng.permutation(POPULATION) < POPULATION // 2 for _ in range(4)])
    reference = torch.stack([
        _logits({**own, "net": _train(x[m], y[m], own["mean"], own["std"], seed=s)}, x)
        for s, m in enumerate(torch.from_numpy(keep))
    ])  # fmt: skip
    result = privbench.audit_outputs(
        logits=_logits(own, x), labels=y, member=samples.member, reference_logits=reference,
        reference_keep=keep, workspace=tmp_path,
    )  # fmt: skip
    names = {a.name for a in result.attacks}
    assert {"loss", "lira", "rmia", "watson", "sablayrolles"} <= names
    assert result.attack("lira").metrics.auc > 0.6
    assert any(note.startswith("attack curvature left out") for note in result.notes)
    with pytest.raises(privbench.PrivbenchError, match="queries other inputs"):
        privbench.audit_outputs(
            logits=_logits(own, x), labels=y, member=samples.member, reference_logits=reference,
            reference_keep=keep, attacks=["curvature"], workspace=tmp_path,
        )  # fmt: skip


def _bad_member_files(folder: Path, split: int) -> dict[str, tuple[Path, str]]:
    cases = {
        "wrong length": (np.zeros(10, dtype=bool), "needs one entry per sample"),
        "out of range": (np.array([1, 2, split + 5]), f"index {split + 5} is outside"),
        "duplicates": (np.array([1, 2, 2]), "index 2 is given twice"),
        "empty": (np.array([], dtype=np.int64), "none of the target's members"),
        "everything": (np.arange(split), "every population sample is a member"),
    }
    files = {}
    for name, (array, message) in cases.items():
        path = folder / f"{name.replace(' ', '-')}.npy"
        np.save(path, array)
        files[name] = (path, message)
    (folder / "members.json").write_text("[1, 2]")
    files["format"] = (folder / "members.json", "unknown format '.json'")
    (folder / "broken.npy").write_bytes(b"not numpy")
    files["unreadable"] = (folder / "broken.npy", "not a readable .npy array")
    (folder / "words.txt").write_text("index\n1\nseven\n")
    files["text"] = (folder / "words.txt", "'seven' is neither a sample index nor true/false")
    return files


def test_bad_member_files_are_one_line_errors(own, digits, tmp_path, capsys):
    for name, (path, message) in _bad_member_files(tmp_path, len(digits.train)).items():
        code, _, err = run_cli(capsys, "run", "--target", str(own["weights"]), "--members",
                               str(path), "--model", "mlp", "-w", str(tmp_path / "ws"))  # fmt: skip
        assert code == 2, (name, err)
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)


def test_weights_that_do_not_fit_name_what_does_not(own, digits, tmp_path, capsys):
    mean, std = own["mean"], own["std"]
    five = _train(digits.train.x[:50], digits.train.y[:50] % 5, mean, std, classes=5)
    five_path = tmp_path / "five.safetensors"
    save_file({k: v.contiguous() for k, v in five.state_dict().items()}, str(five_path))
    pickled = tmp_path / "model.pt"
    torch.save(own["net"].state_dict(), pickled)
    members = str(own["folder"] / "members.npy")
    cases = [
        (["--target", str(own["weights"]), "--model", "small-cnn"], "lack tensor 'net.features"),
        (["--target", str(own["weights"]), "--model", "mlp", "--model-opt", "width=64"],
         "tensor 'net.features.1.weight' is [256, 64] in the file but [64, 64]"),
        (["--target", str(five_path), "--model", "mlp"], "give 5 classes, but the dataset has 10"),
        (["--target", str(pickled), "--model", "mlp"], "must be a .safetensors file"),
        (["--target", str(own["weights"]), "--model", "mlp", "--paired"], "--paired"),
        (["--target", str(own["weights"]), "--model", "mlp", "-a", "reconstruction"],
         "initial weights"),
    ]  # fmt: skip
    for flags, message in cases:
        code, _, err = run_cli(capsys, "run", *flags, "--members", members, "-a", "loss",
                               "-w", str(tmp_path / "ws"))  # fmt: skip
        assert code == 2 and message in err, (flags, err)
    code, _, err = run_cli(capsys, "run", "--target", str(own["weights"]), "--model", "mlp")
    assert code == 2 and "--members FILE" in err


def test_an_imagefolder_target_takes_its_members_by_file_path(tmp_path):
    """Members listed as the images' paths under the data root; results keep the names."""
    from PIL import Image
    from privbench_plugins.datasets.torchvision_datasets import ImageFolder

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8) // (2 if label == "a" else 1)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    data = ImageFolder(image_size=8, grayscale=True).load(str(tmp_path / "data"))
    names = data.train_names
    assert names is not None and len(names) == len(data.train) == 32
    chosen = np.sort(np.random.default_rng(1).permutation(32)[:16])
    (tmp_path / "members.txt").write_text("\n".join(names[i] for i in chosen) + "\n")
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    torch.manual_seed(0)
    net = MLP().create((1, 8, 8), 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(
            net((data.train.x[chosen] - mean) / std), data.train.y[chosen]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(tmp_path / "net.safetensors"))  # fmt: skip
    result = privbench.audit(
        target=tmp_path / "net.safetensors", members=str(tmp_path / "members.txt"),
        model="mlp", dataset=("imagefolder", {"image_size": 8, "grayscale": True}),
        data_root=str(tmp_path / "data"), attacks=["loss"], workspace=tmp_path / "ws",
    )  # fmt: skip
    assert result.spec.target["members"] == 16
    scores = result.attack("loss").scores
    assert {result.sample_names[int(s)] for s in scores.sample[scores.member]} == {
        names[i] for i in chosen
    }
    assert privbench.load_run(result.path).sample_names == result.sample_names
    (tmp_path / "bad.txt").write_text("a/nothere.png\n")
    with pytest.raises(privbench.PrivbenchError, match=r"'a/nothere\.png' is not a sample"):
        privbench.audit(
            target=tmp_path / "net.safetensors", members=str(tmp_path / "bad.txt"), model="mlp",
            dataset=("imagefolder", {"image_size": 8, "grayscale": True}),
            data_root=str(tmp_path / "data"), attacks=["loss"], workspace=tmp_path / "ws",
        )  # fmt: skip
