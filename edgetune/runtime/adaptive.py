"""Run an adaptive bundle: stem → blocks (with keep) → head loss → backward walk.

A language model's blocks take no keep count and return no attention (they drop no tokens);
ALaST's per-layer signal is then the mean of the tokens after the first (``summary``). A
parameter two parts use (a language model's embedding tied to its head) gets the sum of their
gradients.

Trained blocks run their trainable backward, frozen blocks (above the lowest trained one)
their frozen backward, and below the lowest trained block no backward runs at all; that block
runs its ``first`` graphs (parameter gradients, no input gradient) where the bundle has them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune.bundle import STORE
from edgetune.errors import UsageError
from edgetune.runtime.ort_build import check_int8_base
from edgetune.runtime.placement import HOST, Placement
from edgetune.runtime.sessions import (
    ParamValues,
    ResidentParams,
    SessionCache,
    load_params,
    quantized_params,
    read_index,
)
from edgetune.schedule.alast.importance import class_token_delta, class_token_norm


@dataclass
class StepResult:
    loss: float
    logits: np.ndarray
    grads: dict[str, np.ndarray]          # parameter name → gradient (trained parts only;
                                          # OrtValues on the device when resident)
    cls_delta: np.ndarray                 # (L,) ALaST importance per layer
    cls_attn: list[np.ndarray | None]     # per layer (B, N_l); None where blocks drop no tokens
    backward: dict[str, str] = field(default_factory=dict)  # part → graph run backward
    cls_norm: np.ndarray | None = None    # (L,) ‖CLS_{l−1}‖², batch mean (the "relative" rule)


class AdaptiveRunner:
    """Executes an adaptive bundle's graphs; ``params`` is the live parameter dict."""

    def __init__(self, bundle: str | Path, threads: int = 0, placement: Placement = HOST):
        self.folder = Path(bundle)
        self.index = read_index(self.folder)
        if self.index["mode"] != "adaptive":
            raise UsageError(f"{self.folder}: mode {self.index['mode']!r}, expected 'adaptive'")
        if self.index.get("base", {}).get("dtype", "fp32") == "int8":
            check_int8_base(str(self.folder))
        # an int8 base's frozen weights live in its graphs: their float32 copies stay on disk
        self.params = load_params(self.folder / self.index["params"], skip=quantized_params(self.index))
        self.parts = self.index["parts"]
        self.blocks: list[str] = self.index["blocks"]
        self.placement = placement
        self.sessions = SessionCache(self.folder, threads, placement)
        # resident: the parameters live on the device (``values``), ``params`` is emptied
        self.values = ResidentParams(self.params, placement) if placement.resident \
            else ParamValues(self.params)
        self.key_bias = "key_bias" in self.parts["stem"]["outputs"]
        # blocks whose activations are saved for backward rather than recomputed in it (their
        # bundle's ``_store`` graphs): all, until the RAM cap asks for less (:meth:`recompute_more`)
        self.store: set[int] = set(range(len(self.blocks)))
        self.summary = self.index["model"].get("summary", SUMMARIES[0])
        if self.summary not in SUMMARIES:
            raise UsageError(f"{self.folder}: summary {self.summary!r}; this edgetune knows "
                             f"{', '.join(SUMMARIES)} (a newer bundle format?)")

    def recompute_more(self) -> bool:
        """Recompute in backward for the lower half of the blocks that still save everything
        (the lowest hold their activations longest); False when none does any more."""
        if not self.store:
            return False
        order = sorted(self.store)
        self.store -= set(order[: max(1, len(order) // 2)])
        return True

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def trainable_blocks(self) -> list[int]:
        return [i for i, b in enumerate(self.blocks) if self.parts[b]["trainable"]]

    def stem_trainable(self) -> bool:
        return bool(self.parts["stem"]["trainable"])

    def _graph(self, part: str, variant: str) -> str:
        return self.parts[part]["graphs"][variant]

    def _inputs(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> dict:
        names = self.parts["stem"]["inputs"]
        if not isinstance(inputs, Mapping):
            inputs = dict(zip(names, inputs))
        return {n: np.ascontiguousarray(inputs[n]) for n in names}

    def forward(self, inputs, keep: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Inference: logits and cls_delta, from the plain forward graphs."""
        params = self.values.refresh()
        x, bias, _ = self._stem(params, self._inputs(inputs), "forward")
        deltas, prev = [], self._cls(x)
        for i, block in enumerate(self.blocks):
            x, bias, _ = self._block_forward(params, self._block_part(block, x, keep[i]), x, bias,
                                             keep[i], "forward")
            cur = self._cls(x)
            deltas.append(float(class_token_delta(prev, cur)))
            prev = cur
        (logits,) = self.sessions.run_ort(self._graph("head", "forward"), ["logits"],
                                          {**params, **self._head_feeds(x, bias)})
        return logits.numpy(), np.array(deltas, dtype=np.float32)

    # Activations travel between graphs as OrtValues (no numpy copies); parameters are fed as
    # OrtValues viewing the live numpy arrays (built once, reused every call).
    def _stem(self, params: dict, inputs: dict, variant: str):
        part = self.parts["stem"]
        file = self._graph("stem", variant)
        names = part["outputs"] + (part["saved"].get("train", []) if variant != "forward" else [])
        values = dict(zip(names, self.sessions.run_ort(file, names, {**params, **inputs})))
        values.update(inputs)
        return values["tokens"], values.get("key_bias"), values

    def _block_part(self, block: str, x, keep: int) -> dict:
        """The block's graphs for this keep count: its dense twin (no ranking, gather or
        scatter) when it keeps every token of ``x`` and the bundle has one."""
        part = self.parts[block]
        dense = part.get("dense")
        return dense if dense is not None and keep >= int(x.shape()[1]) else part

    def _variant(self, part: dict, kind: str, mode: str, i: int) -> str:
        """``<kind>_<mode>``, or its ``_store`` pair (nothing recomputed in backward) for a
        block in ``self.store`` where the bundle has one."""
        name = f"{kind}_{mode}"
        return name + STORE if i in self.store and name + STORE in part["graphs"] else name

    def _block_forward(self, params: dict, part: dict, x, bias, keep: int, variant: str):
        saved = part["saved"].get(variant.partition("_")[2], []) if variant != "forward" else []
        names = part["outputs"] + [s for s in saved if s not in part["outputs"]]
        feeds = {"x": x, **({"keep": np.array([keep], dtype=np.int64)} if "keep" in part["inputs"] else {})}
        if bias is not None:
            feeds["key_bias"] = bias
        values = dict(zip(names, self.sessions.run_ort(part["graphs"][variant], names,
                                                       {**params, **feeds})))
        values.update(feeds)
        return values["y"], values.get("key_bias_out"), values

    def step(self, inputs, labels: np.ndarray, keep: Sequence[int],
             train: Iterable[int] | None = None, train_stem: bool | None = None) -> StepResult:
        """One forward + backward. ``train``: block indices trained this step (default: every
        block with trainable parameters); ``train_stem``: default, when the stem has any."""
        L = self.num_layers
        if len(keep) != L:
            raise UsageError(f"keep has {len(keep)} entries; the model has {L} layers")
        trained = set(self.trainable_blocks() if train is None else train)
        if not trained <= set(range(L)):
            raise UsageError(f"train={sorted(trained)}: block indices must be in [0, {L})")
        stem_on = self.stem_trainable() if train_stem is None else train_stem and self.stem_trainable()
        lowest = -1 if stem_on else min(trained, default=L)
        params = self.values.refresh()
        run = self.sessions.run_ort
        x, bias, stem_vals = self._stem(params, self._inputs(inputs),
                                        "forward_train" if stem_on else "forward")
        kept: dict[int, tuple[str, dict]] = {}  # block → (its backward graph, what it reads)
        deltas, norms, attns, prev = [], [], [], self._cls(x)
        for i, block in enumerate(self.blocks):
            mode = self._mode(block, i, trained, lowest)
            part = self._block_part(block, x, keep[i])
            variant = "forward" if i < lowest else self._variant(part, "forward", mode, i)
            x, bias_out, values = self._block_forward(params, part, x, bias, keep[i], variant)
            if i >= lowest:
                file = part["graphs"][self._variant(part, "backward", mode, i)]
                need = self.sessions.input_names(file)
                kept[i] = (file, {n: values[n] for n in need if n in values})
            cur = self._cls(x)
            deltas.append(float(class_token_delta(prev, cur)))
            norms.append(float(class_token_norm(prev)))
            prev = cur
            attns.append(values["cls_attn"].numpy() if "cls_attn" in values else None)
            bias = bias_out
        head = self.parts["head"]
        outs = run(self._graph("head", "train"), head["outputs"],
                   {**params, **self._head_feeds(x, bias), "labels": np.asarray(labels, np.int64)})
        res = dict(zip(head["outputs"], outs))
        out = self._out
        grads = {p: out(res[p + "_grad"]) for p in head["trainable"]}
        dy, backward = res["tokens_grad"], {}
        for i in range(L - 1, max(lowest, 0) - 1, -1):
            block = self.blocks[i]
            file, saved = kept.pop(i)
            first = self._mode(block, i, trained, lowest) == "first"
            wanted = [p + "_grad" for p in self._trained_params(block, i, trained)]
            wanted = wanted if first else ["x_grad"] + wanted
            got = dict(zip(wanted, run(file, wanted, {**params, **saved, "dy": dy})))
            dy = None if first else got.pop("x_grad")
            grads.update((k[: -len("_grad")], out(v)) for k, v in got.items())
            backward[block] = file
        if stem_on:
            stem = self.parts["stem"]
            wanted = [p + "_grad" for p in stem["trainable"]]
            file = self._graph("stem", "backward_train")
            stem_grads = run(file, wanted, {**params, **stem_vals, "dtokens": dy})
            for p, g in zip(stem["trainable"], stem_grads):
                # tied to the head (a language model's embedding): the sum of both gradients
                grads[p] = out(g) if p not in grads else self._add(grads[p], g)
            backward["stem"] = file
        return StepResult(float(res["loss"].numpy()), res["logits"].numpy(), grads,
                          np.array(deltas, dtype=np.float32), attns, backward,
                          np.array(norms, dtype=np.float32))

    def _cls(self, x) -> np.ndarray:
        """The summary (B, D) of a block's (B, N, D) output, on the host: the class token, or
        for a language model the mean of the tokens after the first. Resident: the class token
        is taken on the device by the bundle's ``class_token`` graph (B·D floats cross, not B·N·D)."""
        graph = self.index.get("optimizer", {}).get("class_token")
        if self.summary == "first" and self.placement.resident and graph is not None:
            (cls,) = self.placement.run(self.sessions.get(graph), ["cls"], {"x": x})
            return np.array(cls.numpy())
        return _summary(x, self.summary)

    def _add(self, grad, more):
        """grad + more (an OrtValue from a graph): numpy on the host; resident, on the host too
        (rare: a tied parameter under full fine-tuning) and put back on the device."""
        total = (grad.numpy() if hasattr(grad, "numpy") else grad) + more.numpy()
        return self.placement.upload(total.astype(np.float32)) if self.placement.resident else total

    def _out(self, value):
        """A gradient as the optimizer takes it: numpy on the host, the OrtValue when resident."""
        return value if self.placement.resident else value.numpy()

    def _head_feeds(self, x, bias) -> dict:
        """The head reads the tokens, and the key bias when it pools over non-padding tokens."""
        wants_bias = "key_bias" in self.parts["head"]["inputs"]
        return {"tokens": x, **({"key_bias": bias} if wants_bias else {})}

    def _trained_params(self, block: str, i: int, trained: set[int]) -> list[str]:
        return self.parts[block]["trainable"] if i in trained else []

    def _mode(self, block: str, i: int, trained: set[int], lowest: int) -> str:
        """``first`` for the lowest trained block when nothing below needs its input gradient
        (bundles exported with that variant), else ``train`` or ``frozen``."""
        if i not in trained or not self.parts[block]["trainable"]:
            return "frozen"
        if i == lowest and "backward_first" in self.parts[block]["graphs"]:
            return "first"
        return "train"


def twins(part: dict) -> list[dict]:
    """A part's index entry, and its dense twin's where it has one."""
    dense = part.get("dense")
    return [part] if dense is None else [part, dense]


def graph_files(index: dict, store: Collection[int] | None = None) -> set[str]:
    """The graph files a run of this adaptive bundle may open: every part's and dense twin's,
    for each block either its ``_store`` graphs (``store``: the blocks that save; default all)
    or the plain ones they replace, not both."""
    blocks = index["blocks"]
    store = set(range(len(blocks))) if store is None else set(store)
    files = set()
    for key, part in index["parts"].items():
        saving = key in blocks and blocks.index(key) in store
        for twin in twins(part):
            graphs = twin["graphs"]
            for variant, file in graphs.items():
                if variant.endswith(STORE) and not saving or saving and variant + STORE in graphs:
                    continue
                files.add(file)
    return files


SUMMARIES = ("first", "mean_skip_first")  # what ``summary`` a bundle's index may name


def _summary(x, kind: str = "first") -> np.ndarray:
    """(B, D) of a (B, N, D) OrtValue or array: token 0 (``first``, the class token) or the
    mean of tokens 1.. (``mean_skip_first``; token 0 alone when N = 1)."""
    a = x.numpy() if hasattr(x, "numpy") else x
    if kind == "first" or a.shape[1] == 1:
        return np.array(a[:, 0])
    return a[:, 1:].mean(axis=1)
