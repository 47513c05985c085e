"""loaders: replay stored crops with their soft labels, swap in hard labels by schedule.

Public API: :class:`ReplayLoader` (training steps) and :func:`record_labels` (relabel through
the same pixel path), the schedules and label pools, the losses and mixing, and the pixel
backends: :class:`TorchBackend` (pure PyTorch), :class:`DeviceBackend` (the image set held on
the device) and, when FFCV is installed, :class:`FFCVBackend` with :func:`write_beton`. The same steps in other shapes (docs/ecosystem.md):
``(images, StepTargets)`` pairs with :class:`StepLoss`, a ``torch.utils.data`` route
(:class:`ReplayBatchSampler` + :class:`ReplayDataset`) and SRe2L-shaped batches
(:class:`SRe2LBatches`).
"""
from .backend import CropBatch, PixelBackend
from .device_backend import DeviceBackend
from .distributed import resolve_rank, shard_batches
from .images import ArraySource, DatasetSource, FolderSource, ImageSource, ListSource, as_image_source
from .losses import kd_loss, smooth_one_hot, soft_cross_entropy
from .mixing import apply_mix, mix_targets, to_model_input
from .record import record_labels
from .replay import IMAGENET_MEAN, IMAGENET_STD, ReplayLoader
from .step import PlannedBatch, Step
from .pairs import StepLoss, StepPairs, StepTargets
from .pools import POOL_POLICIES, LabelPool
from .schedules import (
    AllHard, AllSoft, Alternate, Blend, DriftGated, HALDSplit, Phases, Ratio, Schedule, StepPlan, parse_schedule,
)
from .sre2l import SRe2LBatches
from .torch_backend import TorchBackend
from .torch_data import ReplayBatchSampler, ReplayDataset, ReplayKey, replay_dataloader

__all__ = [
    "CropBatch", "PixelBackend", "DeviceBackend", "resolve_rank", "shard_batches",
    "ArraySource", "DatasetSource", "FolderSource", "ImageSource", "ListSource", "as_image_source",
    "kd_loss", "smooth_one_hot", "soft_cross_entropy", "apply_mix", "mix_targets", "to_model_input",
    "record_labels", "IMAGENET_MEAN", "IMAGENET_STD", "PlannedBatch", "ReplayLoader", "Step",
    "AllHard", "AllSoft", "Alternate", "Blend", "DriftGated", "HALDSplit", "LabelPool", "POOL_POLICIES", "Phases", "Ratio",
    "Schedule", "StepPlan", "parse_schedule", "TorchBackend",
    "StepLoss", "StepPairs", "StepTargets", "ReplayBatchSampler", "ReplayDataset", "ReplayKey", "replay_dataloader",
    "SRe2LBatches",
]

# FFCV is an optional extra: loaders works without it.
try:
    from .ffcv_backend import FFCVBackend  # noqa: F401

    __all__.append("FFCVBackend")
except ImportError:
    pass
try:
    from .beton import write_beton  # noqa: F401

    __all__.append("write_beton")
except ImportError:
    pass
