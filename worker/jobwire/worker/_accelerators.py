"""The accelerators this machine has, for Hello: NVIDIA GPUs through NVML, when it is available.

NVML comes from the optional `nvidia-ml-py` package (module `pynvml`). Without it, or without a driver,
the worker simply reports no accelerator.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

log = logging.getLogger("jobwire.worker")


@dataclass(frozen=True, slots=True)
class Accelerator:
    name: str
    uuid: str
    memory_bytes: int


def detect_accelerators() -> list[Accelerator]:
    """The GPUs NVML sees, or [] when NVML is not installed or does not initialize."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return []
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver, no GPU: NVML raises its own NVMLError types
        log.debug("NVML did not initialize (%s): reporting no accelerator", exc)
        return []
    try:
        return _devices(nvml)
    except Exception as exc:
        log.warning("NVML failed while listing GPUs (%s): reporting no accelerator", exc)
        return []
    finally:
        _shutdown(nvml)


def _devices(nvml: ModuleType) -> list[Accelerator]:
    found = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        found.append(
            Accelerator(
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            )
        )
    return found


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py versions return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as exc:
        log.debug("nvmlShutdown failed: %s", exc)
