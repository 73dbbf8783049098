"""Loading a bundle's index, parameters and graphs (numpy + onnxruntime; never torch)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from edgetune.bundle import INDEX_FILE, INDEX_FORMAT
from edgetune.errors import EdgetuneError, UsageError
from edgetune.jsonfile import read_json
from edgetune.runtime.ort_env import arena_errors, session_options
from edgetune.runtime.placement import HOST, Placement
from edgetune.tensorfile import load_tensors


def read_index(bundle: str | Path) -> dict:
    return read_json(Path(bundle) / INDEX_FILE, "no such file (not an exported bundle?)", INDEX_FORMAT)


def quantized_params(index: dict) -> list[str]:
    """The frozen parameters an int8 base holds in its graphs (no graph takes them as inputs)."""
    return list(index.get("base", {}).get("quantized", []))


def load_params(path: str | Path, skip: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Parameters from a safetensors file (but ``skip``), as writable float32 arrays. Read, not
    mapped: mapping the frozen ones saved nothing on minilm-l6 (a batch's embedding lookups,
    through the kernel's fault-around, touch nearly the whole table; its pages only moved from
    RssAnon to RssFile)."""
    params = load_tensors(path, skip=skip)  # a tensor at a time: no second copy of the file
    return {k: np.require(v, np.float32, ["C", "W"]) for k, v in params.items()}


class SessionCache:
    """One InferenceSession per graph file, created on first use.

    ``run_ort`` takes numpy arrays or ``OrtValue``s and returns ``OrtValue``s, so activations
    passed from graph to graph (block outputs, saved tensors, incoming gradients) stay in ORT's
    buffers instead of being copied into numpy. With a resident ``placement`` (a GPU) the
    sessions run on its provider and every result stays on its device (IO binding).
    """

    def __init__(self, folder: str | Path, threads: int = 0, placement: Placement = HOST):
        self.folder = Path(folder)
        self.threads = threads
        self.placement = placement
        self._options = None  # made with the first session: the shared arena is set up by then
        self._sessions: dict[str, object] = {}
        self._inputs: dict[str, list[str]] = {}

    @property
    def options(self):
        if self._options is None:
            self._options = session_options(self.threads, fixed_shapes=False)  # keep counts vary
        return self._options

    def get(self, file: str):
        if file not in self._sessions:
            import onnxruntime

            with arena_errors(f"opening {file}"):
                sess = onnxruntime.InferenceSession(str(self.folder / file), self.options,
                                                    providers=self.placement.providers())
            want = self.placement.providers()[0]
            want = want[0] if isinstance(want, tuple) else want
            if sess.get_providers()[0] != want:
                raise UsageError(f"provider={self.placement.provider!r}: onnxruntime could not start "
                                 f"{want} (a driver, CUDA or cuDNN library missing or of another "
                                 "version?); it would run on the CPU instead: use --provider cpu")
            self._sessions[file] = sess
            self._inputs[file] = [i.name for i in sess.get_inputs()]
        return self._sessions[file]

    def input_names(self, file: str) -> list[str]:
        self.get(file)
        return self._inputs[file]

    def run_ort(self, file: str, outputs: list[str], values: dict) -> list:
        """Run ``file`` feeding each input by name from ``values`` (numpy arrays or ``OrtValue``s;
        extra entries ignored); the results are ``OrtValue``s."""
        from onnxruntime import OrtValue

        sess = self.get(file)
        feeds = {}
        for n in self._inputs[file]:
            try:
                v = values[n]
            except KeyError:
                raise EdgetuneError(f"{file}: no value for graph input {n!r}") from None
            feeds[n] = v if isinstance(v, OrtValue) else OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
        with arena_errors(file):
            if self.placement.resident:
                result = self.placement.run(sess, outputs, feeds)
            else:
                result = sess.run_with_ort_values(outputs, feeds)
        for name, value in zip(outputs, result):
            if not value.has_value():
                raise EdgetuneError(f"{file}: onnxruntime returned no value for {name!r}")
        return result


class ParamValues(dict):
    """name → ``OrtValue`` viewing the live numpy parameter (no copy; in-place updates show).

    Rebuilt for a name whose array was replaced rather than updated in place."""

    def __init__(self, params: dict[str, np.ndarray]):
        super().__init__()
        self.params = params
        self._arrays: dict[str, np.ndarray] = {}

    def refresh(self) -> ParamValues:
        from onnxruntime import OrtValue

        for name, arr in self.params.items():
            if self._arrays.get(name) is not arr:
                if not (arr.flags.c_contiguous and arr.dtype == np.float32):
                    raise EdgetuneError(f"parameter {name!r}: need a C-contiguous float32 array")
                self._arrays[name] = arr
                self[name] = OrtValue.ortvalue_from_numpy(arr)
        return self


class ResidentParams(dict):
    """name → ``OrtValue`` on ``placement``'s device, uploaded once; the host arrays are
    released (``params`` is emptied). An optimizer on the device replaces entries in place."""

    def __init__(self, params: dict[str, np.ndarray], placement: Placement):
        super().__init__((name, placement.upload(arr)) for name, arr in params.items())
        params.clear()

    def refresh(self) -> ResidentParams:
        return self
