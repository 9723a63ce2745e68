"""Errors of the storage backends, each with a hint that says what to do."""

from __future__ import annotations


class StorageError(Exception):
    """A storage backend could not do its job."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class StorageUnavailable(StorageError):
    """A tool or kernel feature the backend needs is missing on this host."""


class BaseImageNotFound(StorageError):
    """The base image (file or logical volume) a volume is made from does not exist."""


class VolumeExists(StorageError):
    """The volume name is taken by something sdmesh does not own for this component."""


class VolumeBusy(StorageError):
    """The volume is still in use (an LV held open by a running guest, for instance)."""


class ToolFailed(StorageError):
    """An external tool (qemu-img, lvcreate, ...) exited with an error."""
