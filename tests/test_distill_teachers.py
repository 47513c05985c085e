"""EfficientNet-Lite teachers load offline and name real photos correctly."""

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("skimage")

import skimage.data

from distill.teachers import (
    LITE_VARIANTS,
    load_efficientnet_lite,
    preprocess_for_teacher,
    teacher_spec,
)
from labelstore.errors import LabelStoreError

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0():
    return load_efficientnet_lite("lite0")


def _top5(model, img):
    spec = teacher_spec("lite0")
    with torch.no_grad():
        logits = model(preprocess_for_teacher(img, spec))
    assert logits.shape == (1, 1000)
    return set(logits[0].topk(5).indices.tolist()), int(logits[0].argmax())


def test_lite0_is_eval_and_1000_way(lite0):
    assert not lite0.training
    assert lite0.teacher_spec.num_classes == 1000


def test_lite0_sees_a_cat(lite0):
    top5, top1 = _top5(lite0, skimage.data.chelsea())
    assert top1 in CATS


def test_lite0_sees_coffee(lite0):
    top5, top1 = _top5(lite0, skimage.data.coffee())
    assert top1 in COFFEE


@pytest.mark.parametrize("name,size", [("lite0", 224), ("lite1", 240), ("lite2", 260)])
def test_spec_sizes(name, size):
    spec = teacher_spec(name)
    assert spec.image_size == size
    assert spec.name == f"efficientnet-{name}"
    assert teacher_spec(f"efficientnet-{name}") == spec


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_larger_lites_see_a_cat(name):
    model = load_efficientnet_lite(name)
    spec = teacher_spec(name)
    with torch.no_grad():
        logits = model(preprocess_for_teacher(skimage.data.chelsea(), spec))
    assert int(logits.argmax()) in CATS


def test_preprocess_shapes_and_grey():
    spec = teacher_spec("lite0")
    grey = np.zeros((3, 28, 28), np.uint8)
    x = preprocess_for_teacher(grey, spec)
    assert x.shape == (3, 3, 224, 224)
    # black pixels map to (0 - mean)/std
    assert torch.allclose(x[0, 0, 0, 0], torch.tensor((0 - spec.mean[0]) / spec.std[0]))


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(LabelStoreError, match="lite0"):
        load_efficientnet_lite("lite9")
    assert "lite0" in LITE_VARIANTS
