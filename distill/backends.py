"""The pixel backends `distill relabel` and `distill train` draw crops through (`--backend`).

`torch`: `loaders.TorchBackend` over the images in memory (no worker processes: the fastest for
a small distilled set). `ffcv`: `loaders.FFCVBackend` over the `images.beton` beside the .npz
(`distill recover --beton` writes it). `device`: `loaders.DeviceBackend`, the image set held as
uint8 on `--device` (a GPU, or the CPU), every batch cropped there in one batched call. A new
backend is one more name in BACKENDS and one more branch in `make_backend`.
"""

from __future__ import annotations

from pathlib import Path

from labelstore.errors import LabelStoreError

__all__ = ["BACKENDS", "make_backend"]

BACKENDS = ("torch", "ffcv", "device")  # the choices of --backend


def make_backend(kind: str, ds, images_path: str | Path, device: str = "cpu"):
    """The `kind` backend over the ImageDataset `ds`, loaded from `images_path` (an .npz);
    `device` is where the device backend holds the images (the run's --device)."""
    if kind == "torch":
        from loaders import TorchBackend

        return TorchBackend(ds.images, ds.labels)
    if kind == "ffcv":
        try:
            from loaders import FFCVBackend
        except ImportError:
            raise LabelStoreError("--backend ffcv needs FFCV: pip install -e '.[ffcv]' (or use --backend torch)") from None
        beton = Path(images_path).with_suffix(".beton")
        if not beton.exists():
            raise LabelStoreError(f"--backend ffcv needs {beton} (`distill recover --beton` writes it); "
                                  "or use --backend torch")
        return FFCVBackend(beton)
    if kind == "device":
        from loaders import DeviceBackend

        return DeviceBackend(ds.images, ds.labels, device=device)
    raise LabelStoreError(f"unknown backend {kind!r}; use " + " or ".join(repr(b) for b in BACKENDS))
