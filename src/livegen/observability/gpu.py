"""GPU readings through NVML (nvidia-ml-py), exposed as Prometheus gauges at scrape time.

`NvmlGpus.open()` initialises NVML once for the node; on a machine without an NVIDIA driver it
returns None and the node simply has no GPU series. A reading a board does not support (power on
some boards, encoder use on those without NVENC) leaves out that one series, not the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    handle: Any


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings return bytes


class NvmlGpus:
    """The node's NVML session: initialised by `open`, ended by `close` (once)."""

    def __init__(self, nvml: ModuleType, gpus: list[Gpu]):
        self.nvml = nvml
        self.gpus = gpus
        self._closed = False

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvmlGpus | None:
        """NVML's view of the GPUs, or None where NVML is missing or cannot start."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                log.info("nvidia-ml-py is not installed: no GPU metrics")
                return None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded ... all mean "no GPU here"
            log.info("NVML unavailable (%s): no GPU metrics", exc or type(exc).__name__)
            return None
        try:
            gpus = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(nvml.nvmlDeviceGetName(handle))
                gpus.append(Gpu(index, name, _text(nvml.nvmlDeviceGetUUID(handle)), handle))
        except Exception as exc:
            log.warning("NVML started but listing GPUs failed (%s): no GPU metrics", exc)
            nvml.nvmlShutdown()
            return None
        log.info("NVML: %s", ", ".join(f"{g.index}: {g.name}" for g in gpus) or "no GPUs")
        return cls(nvml, gpus)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.nvml.nvmlShutdown()


class GpuCollector(Collector):
    """Reads every GPU through NVML at each scrape; owns no state of its own."""

    def __init__(self, gpus: NvmlGpus):
        self._gpus = gpus

    def collect(self) -> Iterator[Metric]:
        nvml = self._gpus.nvml
        label = ["gpu"]
        info = GaugeMetricFamily("livegen_gpu_info", "A GPU NVML sees; always 1.", labels=["gpu", "name", "uuid"])
        utilization = GaugeMetricFamily(
            "livegen_gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU.", labels=label
        )
        used = GaugeMetricFamily("livegen_gpu_memory_used_bytes", "GPU memory in use.", labels=label)
        total = GaugeMetricFamily("livegen_gpu_memory_total_bytes", "GPU memory installed.", labels=label)
        temperature = GaugeMetricFamily("livegen_gpu_temperature_celsius", "GPU core temperature.", labels=label)
        power = GaugeMetricFamily("livegen_gpu_power_watts", "GPU board power draw.", labels=label)
        encoder = GaugeMetricFamily(
            "livegen_gpu_encoder_utilization_ratio", "Share of the last sample period NVENC was busy.", labels=label
        )
        readings = (
            (utilization, lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
            (used, lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used),
            (total, lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total),
            (temperature, lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            (power, lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),  # milliwatts
            (encoder, lambda h: nvml.nvmlDeviceGetEncoderUtilization(h)[0] / 100.0),
        )
        for gpu in self._gpus.gpus:
            index = str(gpu.index)
            info.add_metric([index, gpu.name, gpu.uuid], 1)
            for family, read in readings:
                try:
                    family.add_metric([index], float(read(gpu.handle)))
                except nvml.NVMLError as exc:
                    log.debug("GPU %s: %s unavailable (%s)", index, family.name, exc)
        yield from (info, utilization, used, total, temperature, power, encoder)


def read_gpus(gpus: NvmlGpus | None) -> list[dict[str, float | int | str | None]]:
    """Every GPU's readings now, for the API and the operator page; [] without NVML. A reading
    the card does not support is None."""
    if gpus is None:
        return []
    nvml = gpus.nvml
    readings = {
        "utilization": lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
        "memory_used_bytes": lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used,
        "memory_total_bytes": lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total,
        "temperature_celsius": lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
        "power_watts": lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "encoder_utilization": lambda h: nvml.nvmlDeviceGetEncoderUtilization(h)[0] / 100.0,
    }
    found = []
    for gpu in gpus.gpus:
        row: dict[str, float | int | str | None] = {"index": gpu.index, "name": gpu.name, "uuid": gpu.uuid}
        for key, read in readings.items():
            try:
                row[key] = float(read(gpu.handle))
            except nvml.NVMLError:
                row[key] = None
        found.append(row)
    return found
