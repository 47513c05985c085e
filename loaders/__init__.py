"""loaders: replay stored crops with their soft labels, swap in hard labels by schedule.

Public API: :class:`ReplayLoader` (training steps) and :func:`record_labels` (relabel through
the same pixel path), the schedules and label pools, the losses and mixing, and the pixel
backends: :class:`TorchBackend` (pure PyTorch), :class:`DeviceBackend` (the image set held on
the device) and, when FFCV is installed, :class:`FFCVBackend` with :func:`write_beton`. The same steps in other shapes (docs/ecosystem.md):
``(images, StepTargets)`` pairs with :class:`StepLoss`, a ``torch.utils.data`` route
(:class:`ReplayBatchSampler` + :class:`ReplayDataset`) and SRe2L-shaped batches
(:class:`SRe2LBatches`).
"""
from labelstore.extras import require as _require

# without torch, one clear line (which extra to install) instead of a traceback from deep inside
_require("torch", "the loaders package")

from .backend import PixelBackend  # noqa: E402
from .device_backend import DeviceBackend  # noqa: E402
from .losses import kd_loss, soft_cross_entropy  # noqa: E402
from .pairs import StepLoss, StepTargets  # noqa: E402
from .pools import LabelPool  # noqa: E402
from .record import record_labels  # noqa: E402
from .replay import ReplayLoader  # noqa: E402
from .schedules import Schedule, parse_schedule  # noqa: E402
from .sre2l import SRe2LBatches  # noqa: E402
from .step import Step  # noqa: E402
from .torch_backend import TorchBackend  # noqa: E402
from .torch_data import replay_dataloader  # noqa: E402

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
