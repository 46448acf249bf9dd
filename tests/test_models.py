"""Model plugins: the small built-ins and timm, with local safetensors weights only."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from privbench import Model, OptionError, PrivbenchError


def save(net: torch.nn.Module, path, prefix: str = "") -> str:
    save_file({prefix + k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


MODELS = [
    ("small-cnn", {}),
    ("small-cnn", {"depth": "5", "batchnorm": "true", "width": "4"}),
    ("mlp", {}),
    ("mlp", {"depth": "0"}),
    ("timm/test_resnet", {}),
    ("conv-fc", {}),
    ("conv-fc", {"norm": "group", "width": "8", "hidden": "16"}),
]


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [(name, options, shape) for name, options in MODELS for shape in [(1, 8, 8), (3, 32, 32)]]
    + [("timm/test_vit", {}, (3, 32, 32))]  # a transformer, built for the input size
    + [("tanh-cnn", {}, shape) for shape in [(1, 28, 28), (3, 32, 32), (1, 16, 16)]],
)
def test_logits_features_and_head_agree(registry, name, options, shape):
    torch.manual_seed(0)
    net = registry.create("model", name, options).create(shape, 7)
    model = Model(net, [0.5] * shape[0], [0.25] * shape[0]).eval()
    x = torch.rand(5, *shape)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        assert logits.shape == (5, 7)
        assert features.shape == (5, net.get_classifier().in_features)
        assert torch.allclose(model.classify_features(features), logits, atol=1e-5)
        y = torch.arange(5) % 7
        assert torch.allclose(model.loss(x, y), F.cross_entropy(logits, y, reduction="none"))


def test_small_cnn_can_memorise_random_labels(registry):
    """Random labels can only be learnt by memorising: membership leakage needs that capacity."""
    torch.manual_seed(0)
    x, y = torch.rand(200, 1, 8, 8), torch.randint(0, 10, (200,))
    model = Model(registry.create("model", "small-cnn").create((1, 8, 8), 10), [0.5], [0.3])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step % 25 == 24:
            with torch.no_grad():
                accuracy = float((model(x).argmax(1) == y).float().mean())
            if accuracy > 0.9:
                break
    assert accuracy > 0.9


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("small-cnn", {}, (1, 8, 8)),
        ("mlp", {}, (1, 8, 8)),
        ("conv-fc", {"norm": "group"}, (1, 28, 28)),
        ("tanh-cnn", {}, (1, 28, 28)),
    ],
)
def test_small_models_give_opacus_per_sample_gradients(registry, name, options, shape):
    """DP-SGD trains these as they are: no in-place op, no batch norm."""
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    torch.manual_seed(0)
    net = registry.create("model", name, options).create(shape, 10)
    assert ModuleValidator.validate(net, strict=False) == []
    x, y = torch.rand(6, *shape), torch.arange(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "full backward hook is firing ..." without input grads
        F.cross_entropy(
            GradSampleModule(net, loss_reduction="sum")(x), y, reduction="sum"
        ).backward()
    for param in net.parameters():
        assert param.grad_sample.shape == (6, *param.shape)
        assert torch.allclose(param.grad_sample.sum(0), param.grad, atol=1e-5)


def test_tanh_cnn_is_papernot_et_al_s_network(registry):
    """The layer sizes of the papers' CNN: 26,010 parameters for 10 classes on 28x28."""
    net = registry.create("model", "tanh-cnn").create((1, 28, 28), 10)
    assert sum(p.numel() for p in net.parameters()) == 26_010
    assert net.num_features == 32 and isinstance(net.global_pool[-1], torch.nn.Tanh)


def test_a_model_too_big_for_the_images_is_refused_in_one_line(tmp_path):
    import privbench
    from privbench.plugins import get_registry

    with pytest.raises(PrivbenchError, match=r"needs images of at least 16x16 pixels.*8x8") as err:
        privbench.audit(model="tanh-cnn", population=40, shadows=0, workspace=tmp_path)
    assert "\n" not in str(err.value)
    assert get_registry().get("model", "tanh-cnn").cls.min_input_size == 16


def test_option_validation(registry):
    with pytest.raises(OptionError, match="'width' must be >= 1"):
        registry.create("model", "small-cnn", {"width": "0"})
    with pytest.raises(OptionError, match="'depth' must be >= 0"):
        registry.create("model", "mlp", {"depth": "-1"})
    with pytest.raises(OptionError, match="did you mean 'resnet18'"):
        registry.create("model", "timm/resnet81")
    with pytest.raises(OptionError, match="never downloads"):
        registry.create("model", "timm/resnet18", {"pretrained": "true"})
    with pytest.raises(OptionError, match="drop_rate"):
        registry.create("model", "timm", {"drop_rate": "1.5"})
    assert registry.create("model", "timm/resnet10t").arch == "resnet10t"
    assert registry.create("model", "timm").arch == "resnet18"


def test_checkpoint_must_be_an_existing_safetensors_file(tmp_path, registry):
    source = registry.create("model", "timm/test_resnet").create((3, 16, 16), 5)
    pickled = tmp_path / "weights.pt"
    torch.save(source.state_dict(), pickled)
    with pytest.raises(PrivbenchError, match=r"only from\s+safetensors"):
        registry.create("model", "timm/test_resnet", {"checkpoint": str(pickled)})
    with pytest.raises(PrivbenchError, match="does not exist"):
        registry.create(
            "model", "timm/test_resnet", {"checkpoint": str(tmp_path / "x.safetensors")}
        )
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    plugin = registry.create("model", "timm/test_resnet", {"checkpoint": str(corrupt)})
    with pytest.raises(PrivbenchError, match="cannot read checkpoint"):
        plugin.create((3, 16, 16), 5)
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"other": torch.zeros(3)}, str(unrelated))
    plugin = registry.create("model", "timm/test_resnet", {"checkpoint": str(unrelated)})
    with pytest.raises(PrivbenchError, match="no tensor that fits"):
        plugin.create((3, 16, 16), 5)


def test_local_checkpoint_loads_backbone_and_refits_the_head(tmp_path, registry, caplog):
    torch.manual_seed(1)
    source = registry.create("model", "timm/test_resnet").create((3, 16, 16), 5)
    path = save(source, tmp_path / "weights.safetensors")
    torch.manual_seed(2)
    plugin = registry.create(
        "model", "timm/test_resnet", {"pretrained": "true", "checkpoint": path}
    )
    with caplog.at_level(logging.WARNING):
        net = plugin.create((3, 16, 16), 9)
    block = "layer1.0.conv1.weight"
    assert torch.equal(net.state_dict()[block], source.state_dict()[block])
    assert net.get_classifier().weight.shape == (9, source.get_classifier().in_features)
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text

    # A grayscale model keeps the RGB stem summed over its channels, as timm adapts pretrained.
    gray = plugin.create((1, 16, 16), 5)
    stem = "conv1.0.weight"
    assert torch.allclose(gray.state_dict()[stem], source.state_dict()[stem].sum(1, keepdim=True))
    assert torch.equal(gray.get_classifier().weight, source.get_classifier().weight)

    # Weights privbench stored for a whole Model (keys under 'net.') load as the network's.
    stored = save(Model(source, [0.5] * 3, [0.2] * 3), tmp_path / "model.safetensors")
    again = registry.create("model", "timm/test_resnet", {"checkpoint": stored}).create(
        (3, 16, 16), 5
    )
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in again.state_dict().items())


def test_timm_build_failures_are_one_line_errors(registry):
    with pytest.raises(PrivbenchError, match="timm cannot build 'test_vit_relpos' for 1x8x8"):
        registry.create("model", "timm/test_vit_relpos").create((1, 8, 8), 3)


def test_small_input_stem_keeps_cifar_resolution(registry):
    imagenet = registry.create("model", "timm/resnet18").create((3, 32, 32), 10)
    cifar = registry.create("model", "timm/resnet18", {"small_input_stem": "true"}).create(
        (3, 32, 32), 10
    )
    x = torch.randn(2, 3, 32, 32)
    assert imagenet.forward_features(x).shape == (2, 512, 1, 1)
    assert cifar.forward_features(x).shape == (2, 512, 4, 4)  # stride 8 in all, as He et al.
    assert cifar(x).shape == (2, 10)
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, torch.nn.Identity)
    with pytest.raises(PrivbenchError, match="small_input_stem needs a ResNet stem"):
        registry.create("model", "timm/test_vit", {"small_input_stem": "true"}).create(
            (3, 32, 32), 10
        )
