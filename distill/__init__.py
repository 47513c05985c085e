"""Reference dataset-distillation pipeline: squeeze -> recover -> relabel -> train, evaluate.

Public API (one module per stage):
- `distill.data`: ImageDataset, fashion_mnist, load_fashion_mnist, open_dataset, has_test_split, skimage_photos
- `distill.teachers`: load_efficientnet_lite, teacher_spec, preprocess_for_teacher
- `distill.models`: build_model, MODEL_NAMES
- `distill.inputs`: the data record every stage writes and checks, defaults that fit the images
- `distill.hardsteps`: all-hard training steps without a label file
- `distill.squeeze`, `distill.recover`, `distill.evaluate`: the stages (also `distill` CLI)
"""

from distill.data import (
    ImageDataset,
    fashion_mnist,
    from_arrays,
    load_fashion_mnist,
    load_npz,
    open_dataset,
    skimage_photos,
)
from distill.teachers import TeacherSpec, load_efficientnet_lite, preprocess_for_teacher, teacher_spec

__all__ = [
    "ImageDataset",
    "fashion_mnist",
    "from_arrays",
    "load_fashion_mnist",
    "load_npz",
    "open_dataset",
    "skimage_photos",
    "TeacherSpec",
    "load_efficientnet_lite",
    "preprocess_for_teacher",
    "teacher_spec",
]
