"""On-disk constants of the label file, in one place (FFCV keeps its header dtypes the same way).

Every multi-byte value is little-endian. The layout is specified in docs/format.md.
"""
import numpy as np

LABELSTORE_VERSION = "0.2.0"  # the package version, written into every file (labelstore.__version__)
FORMAT_NAME = "labelstore"
FORMAT_VERSION = 2
# 1: every stored epoch complete. 2 adds /epochs.num_stored (an epoch may hold a subset of its
# batches: LPLD's label pools end in a partial epoch) and the `pixels` root attribute.
SUPPORTED_VERSIONS = (1, 2)

# The oldest HDF5 file-format version the files are written with: HDF5 1.10 (Debian 12's
# h5ls/h5dump, MATLAB, older h5py) reads them; "latest" objects made those tools fail.
HDF5_LIBVER = ("earliest", "v110")

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

# One row per stored epoch (format 2). The epoch's chunk rows are /chunks[first_chunk :
# first_chunk + num_stored], sorted by batch; a complete epoch has num_stored == num_batches.
EPOCH_DTYPE = np.dtype(
    [
        ("batch_size", "<u4"),
        ("num_batches", "<u4"),  # batches the epoch has: ceil(num_images / batch_size)
        ("first_chunk", "<u8"),  # row of its first stored batch in /chunks
        ("num_stored", "<u4"),  # batches of it the file holds
    ]
)
# Format 1 had no num_stored: every epoch complete.
EPOCH_DTYPE_V1 = np.dtype([("batch_size", "<u4"), ("num_batches", "<u4"), ("first_chunk", "<u8")])

# How crops, orders and mixing are obtained: re-derived from the seed, or stored.
DERIVED = "derived"
EXPLICIT = "explicit"
NONE = "none"
