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


#: Bytes of a base image's header :func:`base_header_problem` reads (a qcow2 v3 header is 104).
BASE_HEADER_BYTES = 112
#: qcow2 incompatible feature bit 2: the guest data lives in an external file the header names.
_QCOW2_EXTERNAL_DATA = 1 << 2


def base_header_problem(header: bytes, declared: str | None, base: str) -> str | None:
    """Why a base image with this ``header`` (its first :data:`BASE_HEADER_BYTES`) must not
    be layered on, or None. Pure: read from the file the caller opened, never probed by a
    tool. A qcow2 base naming a backing file (bytes 8-15 of its header: the offset of its
    name) or an external data file would make QEMU open a host path the allow-lists never
    saw; a base whose content is not the declared ``baseFormat`` would be read by QEMU as
    something else than what the host checked."""
    if header.startswith(_QCOW2_MAGIC):
        sniffed = "qcow2"
        if len(header) < 32:
            return f"base image {base} has a truncated qcow2 header"
        backing_offset = int.from_bytes(header[8:16], "big")
        if backing_offset != 0:
            return (
                f"base image {base} is a qcow2 image with a backing file; a base must stand "
                "alone (flatten it once: qemu-img convert -O qcow2 BASE FLAT.qcow2)"
            )
        version = int.from_bytes(header[4:8], "big")
        if version >= 3:
            if len(header) < 80:
                return f"base image {base} has a truncated qcow2 header"
            if int.from_bytes(header[72:80], "big") & _QCOW2_EXTERNAL_DATA:
                return (
                    f"base image {base} is a qcow2 image with an external data file; a base "
                    "must stand alone (qemu-img convert -O qcow2 BASE FLAT.qcow2)"
                )
    else:
        for magic, name in _UNSUPPORTED_MAGIC.items():
            if header.startswith(magic):
                return f"base image {base} is a {name} image; sdmesh uses qcow2 or raw bases"
        sniffed = "raw"
    if declared is not None and declared != sniffed:
        return (
            f"base image {base} is declared baseFormat {declared} but its content is "
            f"{sniffed}; declare the format it has"
        )
    return None


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
