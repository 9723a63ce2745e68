"""Base images: recognising their format and copying them sparsely, in process."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from sdmesh.storage.errors import BaseImageNotFound, StorageError
from sdmesh.storage.model import VolumeFormat

_QCOW2_MAGIC = b"QFI\xfb"
_UNSUPPORTED_MAGIC = {
    b"KDMV": "vmdk",
    b"QED\x00": "qed",
    b"conectix": "vpc",
    b"vhdxfile": "vhdx",
}
_ZERO_BLOCK_BYTES = 64 * 1024
_ZEROS = bytes(_ZERO_BLOCK_BYTES)


def require_base_file(base: str) -> Path:
    path = Path(base)
    if not path.is_absolute():
        raise BaseImageNotFound(
            f"base image {base!r} is not an absolute path",
            hint="give baseImage as an absolute path on the host",
        )
    if not path.is_file():
        raise BaseImageNotFound(
            f"base image {base} does not exist on this host",
            hint="copy the image there first, or place the pool on a host that has it",
        )
    if not os.access(path, os.R_OK):
        raise BaseImageNotFound(f"base image {base} is not readable by this process")
    return path


def sniff_format(path: Path) -> VolumeFormat:
    """qcow2 or raw from the image header (no qemu-img round-trip per VM)."""
    with open(path, "rb") as image:
        head = image.read(8)
    if head.startswith(_QCOW2_MAGIC):
        return "qcow2"
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise StorageError(
                f"base image {path} is a {name} image; sdmesh uses qcow2 or raw bases",
                hint=f"convert it once: qemu-img convert -O qcow2 {path} BASE.qcow2",
            )
    return "raw"


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions holding data, skipping holes where the FS reports them."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole remains
            if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                yield position, size  # no SEEK_DATA here: treat all as data
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        position = end


def sparse_copy(source: Path, destination: Path, size: int | None = None) -> None:
    """Copy ``source`` so that holes and all-zero blocks stay unallocated in the copy.

    Holes of the source are skipped via SEEK_DATA/SEEK_HOLE, and zero-filled 64 KiB blocks
    inside its data are skipped too (like ``cp --sparse=always``). ``size`` may grow the copy.
    """
    with open(source, "rb") as src, open(destination, "wb") as dst:
        length = os.fstat(src.fileno()).st_size
        target = length if size is None else size
        if target < length:
            raise StorageError(
                f"requested size {target} is smaller than the base image ({length} bytes)"
            )
        for start, end in data_extents(src.fileno(), length):
            offset = start
            while offset < end:
                chunk = os.pread(src.fileno(), min(_ZERO_BLOCK_BYTES, end - offset), offset)
                if not chunk:
                    break
                if chunk != _ZEROS[: len(chunk)]:
                    os.pwrite(dst.fileno(), chunk, offset)
                offset += len(chunk)
        os.ftruncate(dst.fileno(), target)
        os.fsync(dst.fileno())
