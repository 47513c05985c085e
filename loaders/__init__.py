"""loaders: replay stored crops with their soft labels, swap in hard labels by schedule.

Public API: :class:`ReplayLoader` (training steps) and :func:`record_labels` (relabel through
the same pixel path), the schedules and label pools, the losses and mixing, and the pixel
backends: :class:`TorchBackend` (pure PyTorch), :class:`DeviceBackend` (the image set held on
the device) and, when FFCV is installed, :class:`FFCVBackend` with :func:`write_beton`. The same steps in other shapes (docs/ecosystem.md):
``(images, StepTargets)`` pairs with :class:`StepLoss`, a ``torch.utils.data`` route
(:class:`ReplayBatchSampler` + :class:`ReplayDataset`) and SRe2L-shaped batches
(:class:`SRe2LBatches`).
"""
from .backend import PixelBackend
from .device_backend import DeviceBackend
from .losses import kd_loss, soft_cross_entropy
from .pairs import StepLoss, StepTargets
from .pools import LabelPool
from .record import record_labels
from .replay import ReplayLoader
from .schedules import Schedule, parse_schedule
from .sre2l import SRe2LBatches
from .step import Step
from .torch_backend import TorchBackend
from .torch_data import replay_dataloader

# The front door: what a training loop needs. The parts behind it (crop records, image sources,
# the individual schedule classes, mixing and normalisation, rank helpers, the DataLoader
# pieces) are public in their modules: loaders.backend, loaders.images, loaders.schedules,
# loaders.mixing, loaders.distributed, loaders.torch_data, loaders.contract (docs/api.md).
__all__ = [
    "ReplayLoader", "Step", "record_labels", "parse_schedule", "Schedule", "LabelPool",
    "kd_loss", "soft_cross_entropy", "StepLoss", "StepTargets", "replay_dataloader", "SRe2LBatches",
    "PixelBackend", "TorchBackend", "DeviceBackend",
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
