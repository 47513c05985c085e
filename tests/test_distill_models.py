"""Every architecture builds and runs a forward pass at its size; checkpoints round-trip."""

import pytest
import torch

from distill.models import MODEL_NAMES, build_model, check_class_count, load_checkpoint, save_checkpoint
from labelstore.errors import LabelStoreError

CASES = [(name, 28, 1) for name in MODEL_NAMES] + [(name, 32, 3) for name in MODEL_NAMES] + [
    ("resnet18", 224, 3),  # the torchvision ImageNet variant (7x7 stem, max-pool)
    ("mobilenetv2", 224, 3),
    ("shufflenetv2", 224, 3),
]


@pytest.mark.parametrize("name,size,channels", CASES)
def test_forward_at_size(name, size, channels):
    torch.manual_seed(0)
    model = build_model(name, 10, channels, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    if name != "lenet":  # recover's BN matching needs it; LeNet is a student only
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_lenet_is_refused_as_a_recover_teacher(tmp_path):
    from distill.recover import RecoverConfig, recover

    model = build_model("lenet", 10, 1, 28)
    ckpt = save_checkpoint(tmp_path / "lenet.pt", model, {"model": "lenet", "num_classes": 10, "in_channels": 1,
                                                           "image_size": 28, "test_acc": 0.5})
    with pytest.raises(LabelStoreError, match="BatchNorm"):
        recover(RecoverConfig(teachers=[str(ckpt)], out_dir=str(tmp_path / "rec"), ipc=1, iterations=1),
                progress=False)


def test_lenet_too_small():
    with pytest.raises(LabelStoreError, match="12 px"):
        build_model("lenet", 10, 1, 8)


@pytest.mark.slow
def test_densenet121_at_224():
    model = build_model("densenet121", 5, 3, 224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)


def test_small_and_large_resnet_differ():
    small, large = build_model("resnet18", 10, 3, 32), build_model("resnet18", 10, 3, 224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("convnet", 10, 1, 28).eval()
    meta = {"model": "convnet", "num_classes": 10, "in_channels": 1, "image_size": 28,
            "mean": [0.286], "std": [0.353], "test_acc": 0.5}
    path = save_checkpoint(tmp_path / "c.pt", model, meta)
    back, back_meta = load_checkpoint(path)
    assert back_meta["test_acc"] == 0.5 and not back.training
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))


def test_errors_are_clear(tmp_path):
    with pytest.raises(LabelStoreError, match="unknown model"):
        build_model("vgg99", 10)
    with pytest.raises(LabelStoreError, match="distill squeeze"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LabelStoreError, match="not a distill checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(LabelStoreError, match="teacher has 1000 classes, data set fashion-mnist has 10"):
        check_class_count({"num_classes": 1000}, 10, "fashion-mnist")
