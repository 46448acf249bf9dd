"""Model plugins: the small built-ins and timm, with local safetensors weights only."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from privbench import Model, OptionError, PrivbenchError
from privbench.plugins import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment()


@pytest.mark.parametrize("name", ["small-cnn", "mlp", "timm/test_resnet"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_logits_features_and_head_agree(registry, name, shape):
    torch.manual_seed(0)
    net = registry.create("model", name).create(shape, 7)
    model = Model(net, [0.5] * shape[0], [0.25] * shape[0]).eval()
    x = torch.rand(5, *shape)
    logits = model(x)
    features = model.features(x)
    assert logits.shape == (5, 7)
    assert features.shape == (5, net.get_classifier().in_features)
    assert torch.allclose(model.classify_features(features), logits, atol=1e-5)
    assert torch.allclose(
        model.loss(x, torch.arange(5) % 7),
        torch.nn.functional.cross_entropy(logits, torch.arange(5) % 7, reduction="none"),
        atol=1e-6,
    )


def test_small_cnn_can_memorise_random_labels(registry):
    torch.manual_seed(0)
    x, y = torch.rand(200, 1, 8, 8), torch.randint(0, 10, (200,))
    model = Model(registry.create("model", "small-cnn").create((1, 8, 8), 10), [0.5], [0.3])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert float((model(x).argmax(1) == y).float().mean()) > 0.9


def test_option_validation(registry):
    with pytest.raises(OptionError, match="'width' must be >= 1"):
        registry.create("model", "small-cnn", {"width": "0"})
    with pytest.raises(OptionError, match="did you mean 'resnet18'"):
        registry.create("model", "timm/resnet81")
    with pytest.raises(OptionError, match="never downloads"):
        registry.create("model", "timm/resnet18", {"pretrained": "true"})
    assert registry.create("model", "timm/resnet10t").arch == "resnet10t"


def test_local_checkpoint_loads_backbone_and_refits_the_head(tmp_path, registry):
    torch.manual_seed(1)
    source = registry.create("model", "timm/test_resnet").create((3, 16, 16), 5)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)
    plugin = registry.create(
        "model", "timm/test_resnet", {"pretrained": "true", "checkpoint": str(path)}
    )
    net = plugin.create((3, 16, 16), 9)
    stem = next(k for k in source.state_dict() if k.endswith("weight"))
    assert torch.equal(net.state_dict()[stem], source.state_dict()[stem])
    head = net.get_classifier()
    assert head.out_features == 9  # kept fresh: shapes differ from the 5-class checkpoint

    pickle_path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), pickle_path)
    with pytest.raises(PrivbenchError, match="only from safetensors"):
        registry.create("model", "timm/test_resnet", {"checkpoint": str(pickle_path)}).create(
            (3, 16, 16), 5
        )
    with pytest.raises(PrivbenchError, match="does not exist"):
        registry.create(
            "model", "timm/test_resnet", {"checkpoint": str(tmp_path / "none.safetensors")}
        ).create((3, 16, 16), 5)
