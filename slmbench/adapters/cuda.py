"""CUDA GPU: torch timing with synchronisation, torch peak memory, NVML's total-energy counter (nvidia-ml-py)."""
from __future__ import annotations

from ..contracts import Adapter, register_adapter
from ..contracts.adapter import BANDWIDTH, ENERGY, MEMORY, RUNS_MODELS
from . import host_info


class NvmlEnergy:
    """nvmlDeviceGetTotalEnergyConsumption: millijoules since driver load (Volta and newer). Measured."""
    source = "measured"
    note = "measured: NVML total energy counter"

    def __init__(self, index: int = 0):
        import pynvml
        pynvml.nvmlInit()
        self._nv = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h)  # raises NVMLError_NotSupported on old GPUs

    def read(self) -> float:
        return self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h) / 1000.0


@register_adapter
class CudaAdapter(Adapter):
    name = "cuda"
    capabilities = frozenset({RUNS_MODELS, MEMORY, ENERGY, BANDWIDTH})
    torch_device = "cuda"
    memory_kind = "cuda_allocated"

    def __init__(self, profile, threads: int | None = None):
        super().__init__(profile, threads)
        self.index = int(profile.extra.get("index", 0))

    def setup(self) -> None:
        import torch
        from ..errors import Unsupported
        if not torch.cuda.is_available():
            raise Unsupported("no CUDA device visible to torch on this machine")
        torch.cuda.set_device(self.index)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.torch_device = f"cuda:{self.index}"

    def sync(self) -> None:
        import torch
        torch.cuda.synchronize()

    def energy_meter(self):
        try:
            return NvmlEnergy(self.index)
        except Exception:
            return None  # no counter: energy is reported as unavailable rather than guessed

    def reset_peak_memory(self) -> bool:
        import torch
        torch.cuda.reset_peak_memory_stats()
        return True

    def peak_memory_bytes(self) -> int:
        import torch
        return torch.cuda.max_memory_allocated()

    def memory_bytes(self) -> int:
        import torch
        return torch.cuda.memory_allocated()

    def bandwidth(self) -> dict | None:
        bw = self.profile.memory_bandwidth_gbs
        return {"gbs": bw, "method": "device profile"} if bw else None

    def info(self) -> dict:
        import torch
        name = torch.cuda.get_device_name(self.index) if torch.cuda.is_available() else "unavailable"
        return {**host_info(), "adapter": "cuda", "gpu": name, "profile": self.profile.name}
