"""Reference dataset-distillation pipeline: squeeze -> recover -> relabel -> train, evaluate.

Public API (one module per stage):
- `distill.data`: ImageDataset, fashion_mnist, load_fashion_mnist, open_dataset, has_test_split, skimage_photos
- `distill.teachers`: load_efficientnet_lite, teacher_spec, preprocess_for_teacher
- `distill.models`: build_model, MODEL_NAMES
- `distill.inputs`: the data record every stage writes and checks, defaults that fit the images
- `distill.hardsteps`: all-hard training steps without a label file
- `distill.squeeze`, `distill.recover`, `distill.evaluate`: the stages (also `distill` CLI)
"""

# Names are imported on first use (PEP 562), so `distill --help` and a torch-free install do not
# import torch just to load the package.
_LAZY = {name: "distill.data" for name in
         ("ImageDataset", "fashion_mnist", "from_arrays", "load_fashion_mnist", "load_npz", "open_dataset", "skimage_photos")}
_LAZY.update({name: "distill.teachers" for name in
              ("TeacherSpec", "load_efficientnet_lite", "preprocess_for_teacher", "teacher_spec")})
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
