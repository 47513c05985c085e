"""On-disk constants of the label file, in one place (FFCV keeps its header dtypes the same way).

Every multi-byte value is little-endian. The layout is specified in docs/format.md.
"""
import numpy as np

FORMAT_NAME = "labelstore"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# The HDF5 user block (ignored by HDF5 itself) carries a small header of our own: it lets us
# detect truncation on open and check the whole file without trusting HDF5's structures.
USERBLOCK_SIZE = 512
USERBLOCK_MAGIC = b"LABELSTORE\x00\x01\r\n\x1a\n"  # 16 bytes; the \r\n\x1a\n catches text-mode copies
USERBLOCK_DTYPE = np.dtype(
    [("magic", "S16"), ("version", "<u4"), ("file_size", "<u8"), ("crc32", "<u4")]
)

# One row per stored (epoch, batch) chunk, sorted by (epoch, batch).
CHUNK_DTYPE = np.dtype(
    [
        ("epoch", "<u4"),
        ("batch", "<u4"),
        ("offset", "<u8"),  # into /data
        ("num_records", "<u4"),
        ("label_nbytes", "<u4"),
        ("crop_nbytes", "<u4"),
        ("mix_nbytes", "<u4"),
        ("crc32", "<u4"),  # zlib.crc32 of the chunk's bytes (all three sections)
    ]
)

# One row per stored epoch.
EPOCH_DTYPE = np.dtype(
    [
        ("batch_size", "<u4"),
        ("num_batches", "<u4"),
        ("first_chunk", "<u8"),  # row of its batch 0 in /chunks
    ]
)

# How crops, orders and mixing are obtained: re-derived from the seed, or stored.
DERIVED = "derived"
EXPLICIT = "explicit"
NONE = "none"
