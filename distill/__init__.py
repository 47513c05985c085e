"""Reference dataset-distillation pipeline: squeeze -> recover -> relabel -> train, evaluate, demo.

The stages, one module each (each imports no other stage; `demo` is the driver that runs the
others through their config and entry function), and `distill.cli` (one module per verb):
- `distill.squeeze`, `distill.recover`, `distill.relabel`, `distill.train`, `distill.evaluate`, `distill.demo`

What the stages share, one job per module:
- `distill.data`: ImageDataset, fashion_mnist, load_fashion_mnist, open_dataset, has_test_split, skimage_photos
- `distill.inputs`: the data record every stage writes and checks, defaults that fit the images and teachers
- `distill.models`: build_model, MODEL_NAMES, the checkpoint format
- `distill.teachers`: load_teacher (a checkpoint or a pretrained name), load_efficientnet_lite, teacher_spec,
  preprocess_for_teacher
- `distill.committee`: several teachers: priors, weights softmax(prior / T), the weighted Committee,
  batch-specific BatchNorm
- `distill.backends`: make_backend, BACKENDS (the pixel backends of relabel and train)
- `distill.hardsteps`: all-hard training steps without a label file
- `distill.losses` (BN statistics matching), `distill.metrics` (accuracy), `distill.optim` (cosine learning
  rate), `distill.tables` (CSV), `distill.config` (the resolved config beside every output),
  `distill.distributed` (torchrun)
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
