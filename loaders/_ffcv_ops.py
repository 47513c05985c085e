"""The FFCV decoder that replays stored crops: per-sample box and flip, looked up by sample id.

FFCV has no channel for per-sample, per-epoch parameters. This decoder closes over one
preallocated parameter table (``ParamTable``) that the backend overwrites in place before
each ``iter(loader)``. Numba freezes a global or closure array into the compiled code as a
constant *copy* when it is contiguous and at most 1 MB (``BaseContext.make_constant_array``,
``size_limit = 10**6``), and references its memory otherwise; the table is therefore always
allocated above that size, and ``tests/test_loaders_ffcv.py`` checks that an update after
compilation changes the crops.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Tuple

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.state import State

_NUMBA_CONST_LIMIT = 10**6  # numba copies contiguous global arrays up to this many bytes
TOP, LEFT, HEIGHT, WIDTH, FLIP = range(5)


class ParamTable:
    """Per-sample crop parameters, int32 rows ``(top, left, height, width, flip)`` keyed by sample id.

    Allocated once, above numba's constant-freezing limit, and only ever written in place,
    so the compiled decoder sees every update.
    """

    def __init__(self, num_images: int):
        rows = max(int(num_images), _NUMBA_CONST_LIMIT // (5 * 4) + 1)
        self.array = np.zeros((rows, 5), np.int32)
        self.num_images = int(num_images)
        self.owner: object | None = None  # the pass currently using the table (see FFCVBackend)

    def set(self, indices: np.ndarray, boxes: np.ndarray, flips: np.ndarray) -> None:
        self.array[indices, :4] = boxes
        self.array[indices, FLIP] = flips


def _flip_rows(image):
    """Mirror an (H, W, 3) image left-right in place."""
    h, w = image.shape[0], image.shape[1]
    for r in range(h):
        for c in range(w // 2):
            for k in range(3):
                t = image[r, c, k]
                image[r, c, k] = image[r, w - 1 - c, k]
                image[r, w - 1 - c, k] = t


class ReplayCropDecoder(SimpleRGBImageDecoder):
    """Decode, crop ``image[top:top+h, left:left+w]``, resize to ``output_size`` (OpenCV INTER_AREA), flip.

    The box and flip of each sample come from ``params`` (a :class:`ParamTable`) at row
    ``batch_indices[i]``; works for fixed and variable image sizes (the crop happens before
    batching, as in FFCV's RandomResizedCropRGBImageDecoder).
    """

    def __init__(self, output_size: tuple[int, int], params: ParamTable):
        super().__init__()
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.params = params

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        max_w = np.uint64(self.metadata["width"].max())
        max_h = np.uint64(self.metadata["height"].max())
        out_shape = (self.output_size[0], self.output_size[1], 3)
        u8 = np.dtype("<u1")
        return (
            replace(previous_state, jit_mode=True, shape=out_shape, dtype=u8),
            (AllocationQuery(out_shape, u8), AllocationQuery((max_h * max_w * np.uint64(3),), u8)),
        )

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        flip_c = Compiler.compile(_flip_rows)
        params = self.params.array  # referenced (> 1 MB), never copied: see the module docstring

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                p = params[source_ix]
                top, left, h, w = p[0], p[1], p[2], p[3]
                resize_crop_c(temp_buffer, top, top + h, left, left + w, destination[dst_ix])
                if p[4] != 0:
                    flip_c(destination[dst_ix])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode
