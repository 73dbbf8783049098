"""Where a run's tensors live between graphs: the host (numpy arrays viewed by ORT, the CPU
path) or an execution provider's device (``OrtValue``s bound with IO binding, the CUDA path).

Resident placement keeps parameters, activations, gradients and optimizer state on the device
from step to step; only what the scheduler reads (losses, attention rows, each block's class
token, taken on the device by the bundle's ``class_token`` graph) and checkpoints cross to the
host.
``Placement("cpu", resident=True)`` runs that same path on the CPU, so it is tested on machines
without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgetune.config import check_choice, check_int
from edgetune.runtime.ort_build import PROVIDERS


@dataclass(frozen=True)
class Placement:
    provider: str = "cpu"     # an execution provider's short name (ort_build.PROVIDERS)
    device_id: int = 0
    resident: bool = False    # tensors stay on the device (always on for a GPU provider)

    def __post_init__(self) -> None:
        check_choice(self, "provider", tuple(PROVIDERS))
        check_int(self, "device_id", lo=0)
        if self.provider != "cpu" and not self.resident:
            object.__setattr__(self, "resident", True)

    @property
    def device(self) -> str:
        """The device type OrtValues and bindings name: 'cpu' or 'cuda'."""
        return "cpu" if self.provider == "cpu" else self.provider

    def providers(self) -> list:
        """The session's providers, most preferred first (the CPU one runs what the GPU lacks)."""
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        options = {"device_id": str(self.device_id), "arena_extend_strategy": "kSameAsRequested"}
        return [(PROVIDERS[self.provider], options), "CPUExecutionProvider"]

    def upload(self, array: np.ndarray):
        """A device ``OrtValue`` holding a copy of ``array`` (float32 or int64, C-contiguous)."""
        from onnxruntime import OrtValue

        return OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device,
                                            self.device_id)

    def run(self, session, outputs: Sequence[str], feeds: Mapping[str, object]) -> list:
        """Run with IO binding: inputs as given (host arrays are copied where the graph needs
        them), outputs allocated on the device."""
        from onnxruntime import OrtValue

        binding = session.io_binding()
        for name, value in feeds.items():
            if not isinstance(value, OrtValue):
                value = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
            binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        return binding.get_outputs()


HOST = Placement()


class HostView:
    """A device ``OrtValue`` (float32) as checkpoint writers read it: dtype, shape and nbytes
    without a copy; the host copy is made when the data is asked for (``np.asarray``), so a
    streamed write holds one tensor's copy at a time."""

    dtype = np.dtype(np.float32)

    def __init__(self, value):
        self.value = value
        self.shape = tuple(value.shape())
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * 4

    def __array__(self, dtype=None, copy=None):
        arr = self.value.numpy()
        return arr if dtype is None else arr.astype(dtype)
