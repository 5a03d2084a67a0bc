"""A buffer reused between calls: the hot loops' temporaries without an allocation each.

On a CPU a fresh multi-megabyte tensor per layer and batch is not free: the allocator hands large blocks back to
the system, so every new one is page-faulted in and zeroed again, which costs as much as the arithmetic done in
it (and far more in a virtual machine whose memory is backed lazily). A `Scratch` keeps one flat block and lends
views of it; a view is valid until the next `take`, so a caller copies what it keeps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skn.errors import InternalError


class Scratch:
    def __init__(self) -> None:
        self._block = torch.empty(0)

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised contiguous tensor of `shape`, a view of the kept block (grown when too small)."""
        size = 1
        for extent in shape:
            size *= int(extent)
        block = self._block
        if block.numel() < size or block.dtype != dtype or block.device != device:
            block = self._block = torch.empty(size, dtype=dtype, device=device)
        return block[:size].view(shape)


ROW_BUFFER_BYTES = 64 << 20  # a row buffer a pass keeps on a CPU (the null's, skn.statistics.null): 64 MiB
ROW_BUFFER_ROWS = 64  # at most this many rows wait in a buffer


def rows_within(buffer_bytes: int, row_bytes: int) -> int:
    """How many rows of `row_bytes` a row buffer of `buffer_bytes` holds (at most ROW_BUFFER_ROWS; 0 = none).

    Why buffer at all: adding a batch to a running statistic reads and writes the whole running state (the
    null's co-moment block, [R + 1, P m] per layer), and on a CPU that state has left the caches by the time
    the next batch comes (the forward streams the weights through them). Collecting up to 64 rows first makes
    that traffic, and the fixed cost of every tensor operation, once per 64 rows instead of once per batch."""
    if buffer_bytes < 0 or row_bytes < 0:
        raise InternalError(f"a row buffer of {buffer_bytes} bytes for rows of {row_bytes} bytes")
    return min(ROW_BUFFER_ROWS, buffer_bytes // max(1, row_bytes))
