"""Text generation from a language model's decoder graph (export/onnx/decoder.py) on stock
onnxruntime: a prefill over the prompt, then one token a step over the key/value cache.

Choosing the next token from the last position's logits z:

- greedy (``temperature`` 0): argmax z;
- sampling: p = softmax(z / T); with ``top_p`` < 1 only the smallest set of most likely tokens
  whose mass reaches top_p (nucleus sampling, Holtzman et al. 2020, arXiv 1904.09751),
  renormalised; drawn with ``numpy.random.default_rng(seed)``, so a seed repeats its text.

Generation stops at an end-of-sequence id, after ``max_new_tokens``, or at the model's longest
position. A source is a run folder (its checkpoint, written into the graph here), a merged folder
(``edgetune merge``) or a bundle (its initial weights).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.bundle import INDEX_FILE, INFERENCE_DIR, MANIFEST, Bundle
from edgetune.config import check_float, check_int
from edgetune.errors import EdgetuneError, UsageError
from edgetune.tensorfile import load_tensors, save_tensors

INITIAL_PAST = "initial_past.safetensors"  # prefix tuning's cache, in a merged folder


@dataclass
class Sampling:
    """How the next token is chosen: ``temperature`` 0 is greedy; ``top_p`` the nucleus mass."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self, "max_new_tokens", lo=1)
        check_float(self, "temperature", lo=0.0)
        check_float(self, "top_p", lo=0.0, hi=1.0, lo_open=True)
        check_int(self, "seed", lo=0)


def next_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """The next id from one position's logits (V,)."""
    z = np.asarray(logits, np.float64)
    if sampling.temperature == 0.0:
        return int(z.argmax())
    z = z / sampling.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        mass = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(mass, sampling.top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


class Generator:
    """A decoder session with its cache layout; :meth:`ids` yields new token ids."""

    def __init__(self, graph: str | Path, spec: dict, initial_past: dict[str, np.ndarray] | None = None,
                 threads: int = 0, adapters: Sequence[str | Path] = ()):
        """``adapters``: ``.onnx_adapter`` files to apply (over a base decoder, ``decoder_lora.onnx``)."""
        import onnxruntime as ort

        from edgetune.runtime.ort_env import session_options

        self.spec = spec
        self.session = ort.InferenceSession(str(graph), session_options(threads, fixed_shapes=False),
                                            providers=["CPUExecutionProvider"])
        n = int(spec["num_layers"])
        self.past_names = [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
        self.present_names = [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
        self.initial_past = initial_past or {}
        from edgetune.onnx_adapter import run_options

        self.options, self._adapters = run_options([Path(a) for a in adapters])

    def _empty_past(self) -> dict[str, np.ndarray]:
        shape = (1, int(self.spec["num_kv_heads"]), 0, int(self.spec["head_dim"]))
        return {name: self.initial_past.get(name, np.zeros(shape, np.float32)) for name in self.past_names}

    def ids(self, prompt: Sequence[int], sampling: Sampling) -> Iterator[int]:
        """New ids after ``prompt`` (a batch of one), stopping at an EOS id (not yielded)."""
        from onnxruntime import OrtValue

        if not len(prompt):
            raise UsageError("the prompt has no tokens")
        rng = np.random.default_rng(sampling.seed)
        eos = set(int(i) for i in self.spec.get("eos_ids") or [])
        limit = int(self.spec["max_positions"])
        past = {k: OrtValue.ortvalue_from_numpy(v) for k, v in self._empty_past().items()}
        offset = int(next(iter(self._empty_past().values())).shape[2]) if self.past_names else 0
        feed = np.asarray([list(prompt)], np.int64)
        position = offset + feed.shape[1]
        if position > limit:
            raise UsageError(f"the prompt's {feed.shape[1]} tokens pass the model's {limit} positions")
        for _ in range(sampling.max_new_tokens):
            outs = self.session.run_with_ort_values(
                ["logits", *self.present_names],
                {"input_ids": OrtValue.ortvalue_from_numpy(feed), **past}, self.options)
            token = next_token(outs[0].numpy()[0, -1], sampling, rng)
            if token in eos:
                return
            yield token
            if position >= limit:
                return
            past = dict(zip(self.past_names, outs[1:]))
            feed = np.asarray([[token]], np.int64)
            position += 1


def initial_past(spec: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Prefix tuning's trained keys and values (P, H_kv·d_h) as each layer's first cache
    (1, H_kv, P, d_h); None for other methods."""
    if not spec.get("prefix"):
        return None
    h, d = int(spec["num_kv_heads"]), int(spec["head_dim"])
    out = {}
    for i, (key, value) in enumerate(spec["prefix"]):
        for kv, name in (("key", key), ("value", value)):
            if name not in arrays:
                raise EdgetuneError(f"the checkpoint holds no {name} (prefix tuning's cache)")
            a = np.asarray(arrays[name], np.float32)
            out[f"past_key_values.{i}.{kv}"] = np.ascontiguousarray(
                a.reshape(1, a.shape[0], h, d).transpose(0, 2, 1, 3))
    return out


@dataclass
class Source:
    """A decoder graph ready to run, its spec, tokenizer and initial cache."""

    graph: Path
    spec: dict
    tokenizer: Path
    initial_past: dict[str, np.ndarray] | None
    name: str


def open_source(path: str | Path, checkpoint: str = "best", workdir: str | Path | None = None,
                base: bool = False) -> Source:
    """A run folder (its ``checkpoint`` written into a copy of the bundle's decoder, in
    ``workdir``), a merged folder or a bundle (initial weights). ``base``: a LoRA model's base
    decoder (``decoder_lora.onnx``), for ``.onnx_adapter`` files to apply over."""
    if base:
        return _base_source(Path(path))
    from edgetune.merge import MERGED_JSON, trained_arrays, write_inference
    from edgetune.train.run_folder import RunFolder

    path = Path(path)
    if (path / MERGED_JSON).is_file():
        merged = json.loads((path / MERGED_JSON).read_text())
        spec = merged.get("inference", {}).get("decoder")
        if spec is None:
            raise UsageError(f"{path}: not a language model's merged folder (it classifies)")
        past_file = path / INITIAL_PAST
        past = load_tensors(past_file) if past_file.is_file() else None
        return Source(path / merged["inference"]["file"], spec, path / merged["tokenizer"], past,
                      f"{path} (merged)")
    run = RunFolder(path)
    if run.has_info():
        info = run.read_info()
        bundle = Bundle.open(info["bundle"])
        folder = run.checkpoint(checkpoint)
        if folder is None:
            raise EdgetuneError(f"{path}: no checkpoint yet (the run stopped before its first one)")
        index, spec = _decoder_index(bundle)
        arrays = trained_arrays(folder, run.state(folder)["mode"])
        work = Path(workdir or tempfile.mkdtemp(prefix="edgetune-generate-"))
        graph = work / "decoder.onnx"
        write_inference(bundle.path / INFERENCE_DIR, index, arrays, graph)
        assert bundle.tokenizer_path is not None
        return Source(graph, spec, bundle.tokenizer_path, initial_past(spec, arrays),
                      f"{path} ({folder.name})")
    if (path / MANIFEST).is_file():
        bundle = Bundle.open(path)
        index, spec = _decoder_index(bundle)
        assert bundle.tokenizer_path is not None
        params = _bundle_params(bundle, spec)
        return Source(bundle.path / INFERENCE_DIR / index["model"]["file"], spec, bundle.tokenizer_path,
                      initial_past(spec, params) if spec.get("prefix") else None,
                      f"{path} (initial weights)")
    raise EdgetuneError(f"{path}: neither a run folder, a merged folder nor a bundle")


def _base_source(path: Path) -> Source:
    from edgetune.merge import MERGED_JSON

    if (path / MERGED_JSON).is_file():
        merged = json.loads((path / MERGED_JSON).read_text())
        served = merged.get("onnx_adapter") or {}
        if not served.get("base"):
            raise UsageError(f"{path}: holds no base decoder for adapters (a LoRA language model's "
                             "merge on stock onnxruntime writes one)")
        return Source(path / served["base"], merged["inference"]["decoder"], path / merged["tokenizer"],
                      None, f"{path} (base + adapters)")
    if (path / MANIFEST).is_file():
        bundle = Bundle.open(path)
        index, spec = _decoder_index(bundle)
        if "lora_decoder" not in index:
            raise UsageError(f"{path}: holds no base decoder for adapters (LoRA bundles do)")
        assert bundle.tokenizer_path is not None
        return Source(bundle.path / INFERENCE_DIR / index["lora_decoder"]["file"], spec,
                      bundle.tokenizer_path, None, f"{path} (base + adapters)")
    raise UsageError(f"{path}: adapters apply over a bundle or a merged folder")


def _decoder_index(bundle: Bundle) -> tuple[dict, dict]:
    if not bundle.is_lm:
        raise UsageError(f"{bundle.path}: a {bundle.task} model does not generate text")
    index = json.loads((bundle.path / INFERENCE_DIR / INDEX_FILE).read_text())
    spec = index.get("model", {}).get("decoder")
    if spec is None:
        raise EdgetuneError(f"{bundle.path}: no decoder graph (exported by an older edgetune?); re-export")
    index.setdefault("merge", {"merged": False, "tensors": {}})
    return index, spec


def _bundle_params(bundle: Bundle, spec: dict) -> dict[str, np.ndarray]:
    from edgetune.bundle import PARAMS_FILE

    names = {n for pair in spec.get("prefix") or [] for n in pair}
    arrays = load_tensors(bundle.mode_dir("adaptive") / PARAMS_FILE)
    return {n: arrays[n] for n in names}


def stream_text(tokenizer, prompt_ids: Sequence[int], new_ids: Iterator[int]) -> Iterator[str]:
    """The text of ``new_ids`` as it grows: each piece is what decoding added (byte-level
    tokens that only make a character together wait for each other)."""
    ids: list[int] = []
    shown = ""
    for token in new_ids:
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):  # half a character so far
            continue
        yield text[len(shown):]
        shown = text


def save_initial_past(past: dict[str, np.ndarray] | None, folder: Path) -> None:
    """A merged folder's copy of prefix tuning's cache (nothing for other methods)."""
    if past:
        save_tensors(folder / INITIAL_PAST, past)
