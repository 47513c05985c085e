"""Per-epoch sample orders of imported label sets: which image sits at which batch position.

The public codebases do not store the order with the labels (LPLD and HALD save it beside
them); replay re-creates it. These functions re-create the orders each codebase uses, or
read them from a file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import LabelStoreError

ORDER_CHOICES = ("auto", "sre2l-seed42", "hald-seed42", "identity")


def sre2l_orders(num_images: int, epochs: list[int], seed: int = 42) -> dict[int, np.ndarray]:
    """SRe2L's relabel order: one ``RandomSampler(generator=Generator().manual_seed(seed))``
    iterated once per epoch from epoch 0, as its ``generate_soft_label.py`` and the
    ``get_img2batch_idx_list`` of its training code do. Uses this machine's torch: the order
    matches the files only if the relabel run used a torch whose RandomSampler and randperm
    draw the same numbers (true across torch 1.8–2.x on CPU) and started at epoch 0 in one run.
    """
    torch = _torch("re-creating SRe2L's RandomSampler(seed=42) order")
    g = torch.Generator()
    g.manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(range(num_images), generator=g)
    out, wanted = {}, set(epochs)
    for e in range(max(epochs) + 1):
        # list() runs the sampler to exhaustion, as a DataLoader does: RandomSampler draws a
        # second (empty-sliced) randperm at the end of every epoch, which moves the generator
        order = np.asarray(list(sampler), dtype=np.int64)
        if e in wanted:
            out[e] = order
    return out


def hald_orders(num_images: int, epochs: list[int], seed: int = 42) -> dict[int, np.ndarray]:
    """HALD's relabel order: ``torch.randperm(N, generator=Generator().manual_seed(seed + e))``."""
    torch = _torch("re-creating HALD's randperm(seed=42+epoch) order")
    out = {}
    for e in epochs:
        g = torch.Generator()
        g.manual_seed(seed + e)
        out[e] = torch.randperm(num_images, generator=g).numpy().astype(np.int64)
    return out


def identity_orders(num_images: int, epochs: list[int]) -> dict[int, np.ndarray]:
    return {e: np.arange(num_images, dtype=np.int64) for e in epochs}


def _read_table(path: Path, root: Path | None) -> dict:
    """{epoch: order} as stored in an order file (nothing checked yet)."""
    path = Path(path)
    if not path.is_file():
        raise LabelStoreError(f"order file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            with open(path) as fh:
                raw = json.load(fh)
        elif suffix == ".npy":
            raw = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix in (".pt", ".pth", ".tar"):
            from ._common import torch_load

            raw = torch_load(root or path.parent, path)
        else:
            raise LabelStoreError(f"order file {path}: use .json (LPLD), .npy (E, N) or .pt (HALD)")
    except (OSError, ValueError) as exc:
        raise LabelStoreError(f"cannot read order file {path} ({exc})") from None
    if isinstance(raw, dict):
        try:
            return {int(k): v for k, v in raw.items()}
        except ValueError:
            raise LabelStoreError(f"order file {path}: keys must be epoch numbers") from None
    return {e: raw[e] for e in range(len(raw))}


def num_images_in(path: Path, root: Path | None = None) -> int:
    """The image count an order file proves: the length of its orders (all must agree)."""
    table = _read_table(path, root)
    lengths = {int(np.asarray(v).size) for v in table.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise LabelStoreError(f"order file {path}: its epochs' orders have different or zero lengths {sorted(lengths)[:4]}")
    return lengths.pop()


def load_orders(path: Path, num_images: int, epochs: list[int], root: Path | None = None) -> dict[int, np.ndarray]:
    """Orders from a file: LPLD's ``sampler_indices_epoch.json`` (``{"epoch": [ids]}``), a JSON
    list of lists, an ``.npy`` array (E, N), or HALD's ``sampler_indices_dict.pt``."""
    path = Path(path)
    table = _read_table(path, root)
    out = {}
    for e in epochs:
        if e not in table:
            raise LabelStoreError(f"order file {path} has no order for epoch {e} (it covers {len(table)} epochs)")
        order = np.asarray(table[e], dtype=np.int64).reshape(-1)
        if order.shape != (num_images,) or not np.array_equal(np.sort(order), np.arange(num_images)):
            raise LabelStoreError(
                f"order file {path}: epoch {e} is not a permutation of the {num_images} images the labels cover"
            )
        out[e] = order
    return out


def _torch(what: str):
    try:
        import torch
    except ImportError:
        raise LabelStoreError(f"{what} needs torch: pip install torch, or pass --order-from FILE / --order identity") from None
    return torch
