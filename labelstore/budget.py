"""The budget planner: which (codec, stored epochs, crops) configurations fit a byte budget,
how many bytes each takes, and how faithful its decoded labels are on a real sample.

Bytes are predicted, not guessed: labels by encoding the sample with each codec in chunks of
the batch size (bytes per record measured), crops and mix by encoding sample batches, orders
and tables from their fixed record sizes, and the HDF5 overhead measured once on tiny real
files. Fidelity is measured on the sample (learned codecs: fitted on half, measured on the
other half).

Choice rule (``pack --budget``): among the configurations that fit, the highest fidelity
(lowest KL at the training temperature, T=20 by default); configurations within
``tolerance`` nats of the best count as tied, and among tied ones the most stored epochs
wins, then the fewest bytes. Fewer stored epochs keep the first epochs (LPLD's label pool).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import _chunk
from .codecs import LabelCodec, parse_codec_spec
from .crops import CropPolicy, MixPolicy, draw_crops, draw_mix
from .errors import CheckFailed, LabelStoreError
from .fidelity import Fidelity, codec_fidelity

DEFAULT_CODECS = ("dense16", "dense_q:bits=8", "dense_q:bits=6", "dense_q:bits=4",
                  "topk:k=100", "topk:k=50", "topk:k=20", "topk:k=10", "topk:k=5", "lowrank")
POOL_FRACTIONS = (1.0, 1 / 2, 1 / 4, 1 / 10, 1 / 20, 1 / 30, 1 / 40)  # LPLD's 10/20/30/40x among them
DATA_MARGIN, FIXED_MARGIN = 1.015, 64
DEFAULT_TOLERANCE = 1e-3  # nats of KL at T=20 below which two configurations count as equally faithful


@dataclass
class Config:
    codec_spec: str
    codec: LabelCodec
    stored_epochs: int
    crops: str  # "explicit" (stored boxes and orders) or "derived" (re-drawn from the seed, zero bytes)
    predicted_bytes: int
    fidelity: Fidelity
    fits: bool
    chosen: bool = False


@dataclass
class Plan:
    budget: int
    num_images: int
    num_classes: int
    epochs: int
    batch_size: int
    configs: list[Config]
    temperature: float = 20.0
    synthetic_sample: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Config:
        for c in self.configs:
            if c.chosen:
                return c
        smallest = min(self.configs, key=lambda c: c.predicted_bytes)
        raise CheckFailed(
            f"no configuration fits {self.budget:,} B: the smallest ({smallest.codec_spec}, "
            f"{smallest.stored_epochs} epoch(s), {smallest.crops} crops) needs {smallest.predicted_bytes:,} B; "
            "raise the budget or store fewer images"
        )

    def table(self, all_rows: bool = False) -> str:
        head = f"{'':2}{'codec':<18}{'epochs':>7}{'pool':>7}  {'crops':<9}{'bytes':>14}{'B/rec':>9}{'KL@T20':>10}{'KL@T1':>10}{'top1':>8}{'top5':>8}"
        rows = [head]
        for c in sorted(self.configs, key=lambda c: (not c.chosen, c.fidelity.kl_t20, -c.stored_epochs, c.predicted_bytes)):
            if not (c.fits or all_rows):
                continue
            f = c.fidelity
            rows.append(f"{'*' if c.chosen else ' ':2}{c.codec_spec:<18}{c.stored_epochs:>7}{c.stored_epochs / self.epochs:>7.3f}  "
                        f"{c.crops:<9}{c.predicted_bytes:>14,}{c.predicted_bytes / max(c.stored_epochs * self.num_images, 1):>9.1f}"
                        f"{f.kl_t20:>10.2e}{f.kl_t1:>10.2e}{100 * f.top1:>7.2f}%{100 * f.top5:>7.2f}%")
        return "\n".join(rows)


# -- fixed costs ---------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _overhead(num_images: int, epochs: int, batch_size: int, explicit: bool, header_json: str, arrays_spec: tuple) -> int:
    """Bytes a label file of this structure takes beyond its chunk data, measured by writing a
    skeleton with the real tables (epochs, chunk rows, orders, image sizes) and the codec's
    arrays in their real shapes and dtypes (each HDF5 dataset has its own fixed cost)."""
    import json

    from ._build import skeleton_nbytes

    nb = -(-num_images // batch_size)
    order = np.arange(num_images) if explicit else None
    sizes = [(e, b, min(batch_size, num_images - b * batch_size)) for e in range(epochs) for b in range(nb)]
    arrays = {name: np.zeros(shape, dtype) for name, shape, dtype in arrays_spec}
    return skeleton_nbytes(json.loads(header_json), arrays, np.zeros((num_images, 2), np.uint32),
                           {e: (batch_size, order) for e in range(epochs)}, sizes)


def _header(num_classes: int, num_images: int, explicit: bool, codec: LabelCodec, attrs: dict | None = None,
            fingerprint: str | None = None, mix_kind: str = "cutmix", header: dict | None = None) -> dict:
    """The writer header of the file to predict; ``header`` overrides entries (teacher, crop
    policy, pixels, ...) with the caller's real ones."""
    mode = "explicit" if explicit else "derived"
    h = {"num_classes": num_classes, "num_images": num_images, "seed": 0, "image_fingerprint": fingerprint or "",
         "crops": mode, "orders": mode, "mix": mode if mix_kind != "none" else "none",
         "crop_policy": CropPolicy().to_dict(), "mix_policy": MixPolicy(kind=mix_kind).to_dict(),
         "source": "logits", "source_temperature": None, "teacher": {"imported_from": "sre2l"},
         "codec": codec.get_config(), "attrs": attrs or {}, "pixels": None}
    h.update(header or {})
    return h


def predict_bytes(*, num_images: int, epochs: int, batch_size: int, label_bpr: float, crop_bpr: float,
                  mix_per_batch: float, explicit: bool, codec: LabelCodec, attrs: dict | None = None,
                  fingerprint: str | None = None, mix_kind: str = "cutmix", records: int | None = None,
                  batches: int | None = None, header: dict | None = None) -> int:
    """Bytes of a label file with these per-record and per-batch costs. ``records`` / ``batches``:
    what the epochs hold when one is partial (default: every batch of every epoch); ``header``:
    the writer header entries known to the caller (teacher, crop policy, pixels)."""
    import json

    nb = -(-num_images // batch_size)
    records = num_images * epochs if records is None else records
    batches = epochs * nb if batches is None else batches
    # chunks take 1.5% more than the sample's bytes (compressed sizes vary from batch to batch) and
    # the file 64 B more than its skeleton: a budget just above the prediction must hold the file
    data = records * (label_bpr + (crop_bpr if explicit else 0.0)) + (batches * mix_per_batch if explicit else 0.0)
    data = DATA_MARGIN * data + FIXED_MARGIN
    # the skeleton is written with the real header: HDF5 keeps attributes in object headers
    # with slack space, so their cost is not their length (measured once per header)
    h = _header(codec.num_classes, num_images, explicit, codec, attrs, fingerprint, mix_kind, header)
    spec = tuple((k, np.asarray(v).shape, np.asarray(v).dtype.str) for k, v in sorted(codec.get_arrays().items()))
    return int(round(data)) + _overhead(num_images, epochs, batch_size, explicit, json.dumps(h, sort_keys=True), spec)


def stored_epoch_options(epochs: int) -> list[int]:
    return sorted({max(1, int(round(epochs * f))) for f in POOL_FRACTIONS}, reverse=True)


def available_codecs(specs=DEFAULT_CODECS, num_classes: int = 10) -> list[str]:
    """The specs, each checked: an unknown id or bad parameter is an error, never dropped."""
    for s in specs:
        parse_codec_spec(s, max(int(num_classes), 2))
    return list(specs)


def measure_codec(spec: str, num_classes: int, sample: np.ndarray, batch_size: int) -> tuple[LabelCodec, Fidelity, float, int]:
    """(codec, fidelity, label bytes per record, codec array bytes) of one codec on the sample."""
    codec = parse_codec_spec(spec, num_classes)
    test = sample
    if codec.needs_fit:
        if len(sample) < 4:
            raise LabelStoreError(f"codec {spec} needs a sample of logits to fit on (at least 4 records)")
        codec.fit(sample[0::2])
        test = sample[1::2]
    fid, bpr = codec_fidelity(codec, test, min(batch_size, max(len(test), 1)))
    arrays = sum(int(np.asarray(v).nbytes) for v in codec.get_arrays().values())
    return codec, fid, bpr, arrays


def plan(*, num_images: int, num_classes: int, epochs: int, batch_size: int, budget: int, sample: np.ndarray,
         crop_bpr: dict[str, float], mix_per_batch: float, codecs=DEFAULT_CODECS, epoch_options: list[int] | None = None,
         tolerance: float = DEFAULT_TOLERANCE, synthetic_sample: bool = False, attrs_for=None,
         fingerprint: str | None = None, mix_kind: str = "cutmix", stored_for=None, header: dict | None = None) -> Plan:
    """Every (codec, stored epochs, crops mode) configuration with its predicted bytes and
    fidelity; the chosen one marked. ``crop_bpr`` maps crops mode -> crop bytes per record.
    ``stored_for(E)``: (records, batches) the first E epochs hold, when an epoch is partial;
    ``header``: writer header entries the caller knows (teacher, crop policy, pixels)."""
    sample = np.asarray(sample, np.float32)
    if sample.ndim != 2 or sample.shape[1] != num_classes:
        raise LabelStoreError(f"the sample must be logits (n, {num_classes}), got {sample.shape}")
    configs = []
    for spec in available_codecs(codecs, num_classes):
        codec, fid, bpr, arr_bytes = measure_codec(spec, num_classes, sample, batch_size)
        for E in epoch_options or stored_epoch_options(epochs):
            for mode, cbpr in crop_bpr.items():
                size = predict_bytes(num_images=num_images, epochs=E, batch_size=batch_size, label_bpr=bpr,
                                     crop_bpr=cbpr, mix_per_batch=mix_per_batch, explicit=mode == "explicit",
                                     codec=codec, attrs=attrs_for(E) if attrs_for else None, fingerprint=fingerprint,
                                     mix_kind=mix_kind, header=header,
                                     **(dict(zip(("records", "batches"), stored_for(E))) if stored_for else {}))
                configs.append(Config(spec, codec, E, mode, size, fid, size <= budget))
    p = Plan(budget, num_images, num_classes, epochs, batch_size, configs, synthetic_sample=synthetic_sample)
    choose(p, tolerance)
    return p


def choose(p: Plan, tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Mark the configuration the rule picks (see the module docstring)."""
    for c in p.configs:
        c.chosen = False
    fitting = [c for c in p.configs if c.fits]
    if fitting:
        best = min(c.fidelity.kl_t20 for c in fitting)
        tied = [c for c in fitting if c.fidelity.kl_t20 <= best + tolerance]
        max(tied, key=lambda c: (c.stored_epochs, -c.fidelity.kl_t20, -c.predicted_bytes)).chosen = True


def plan_for_source(reader, epochs: list[int], budget: int, sample: np.ndarray, *, fingerprint: str | None = None,
                    codecs=DEFAULT_CODECS, tolerance: float = DEFAULT_TOLERANCE) -> Plan:
    """The plan ``pack --budget`` follows for an imported source (explicit crops, orders and mix)."""
    info = reader.info
    crop_bytes = mix_bytes = n = nbat = 0
    for b in reader.stored_batches(epochs[0])[:4]:
        ib = reader.read_batch(epochs[0], b)
        crop_bytes += len(_chunk.encode_crops(ib.boxes, ib.flips))
        mix_bytes += len(_chunk.encode_mix(ib.mix)) if info.mix_kind != "none" else 0
        n += len(ib.logits)
        nbat += 1
    full = info.layout == "arrays" and not getattr(reader, "has_crops", True)
    p = plan(num_images=info.num_images, num_classes=info.num_classes, epochs=len(epochs), batch_size=info.batch_size,
             budget=budget, sample=sample, crop_bpr={"explicit": 0.0 if full else crop_bytes / n},
             mix_per_batch=mix_bytes / nbat, codecs=codecs, tolerance=tolerance,
             attrs_for=lambda E: {**info.attrs, "source_epochs": epochs[:E]}, fingerprint=fingerprint,
             mix_kind=info.mix_kind, stored_for=lambda E: _stored_counts(reader, epochs[:E]),
             header={"teacher": {"imported_from": info.layout}, "source": info.source,
                     "source_temperature": info.source_temperature})
    p.chosen  # raises when nothing fits
    return p


def _stored_counts(reader, epochs: list[int]) -> tuple[int, int]:
    """(records, batches) the source's epochs hold (a partial epoch holds fewer)."""
    info = reader.info
    B, N = info.batch_size, info.num_images
    batches = [b for e in epochs for b in reader.stored_batches(e)]
    return sum(min(B, N - b * B) for b in batches), len(batches)


def synthetic_sample(num_classes: int, n: int = 4096, seed: int = 0) -> np.ndarray:
    """Teacher-like logits (one dominant class over Gaussian noise) for planning without real ones."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, num_classes)).astype(np.float32)
    z[np.arange(n), rng.integers(0, num_classes, n)] += 8.0
    return z


def drawn_costs(num_images: int, batch_size: int, image_size=(224, 224), mix_kind: str = "cutmix") -> tuple[float, float]:
    """(crop bytes per record, mix bytes per batch) of explicit crops drawn like a relabel run draws them."""
    n = min(num_images, 4 * batch_size)
    idx = np.arange(n)
    sizes = np.broadcast_to(np.asarray(image_size, np.int64), (n, 2))
    crop = 0
    for s in range(0, n, batch_size):
        boxes, flips = draw_crops(CropPolicy(), 0, 0, idx[s : s + batch_size], sizes[s : s + batch_size])
        crop += len(_chunk.encode_crops(boxes, flips))
    mix = 0.0
    if mix_kind != "none":
        m = draw_mix(MixPolicy(kind=mix_kind), CropPolicy().size, 0, 0, 0, min(batch_size, num_images))
        mix = float(len(_chunk.encode_mix(m)))
    return crop / n, mix
