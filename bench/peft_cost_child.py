"""The training process of ``bench/peft_cost.py`` (imported by its child, never by the parent):
a :class:`~edgetune.train.Trainer` as the CLI drives it, with its ORT session runs timed."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def _ort_nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    size = {"tensor(float)": 4, "tensor(int64)": 8, "tensor(int32)": 4, "tensor(bool)": 1}
    return int(np.prod(value.shape())) * size.get(value.data_type(), 4)


class _Timed:
    """A proxy of ORT's training Module or Optimizer whose calls are timed into ``acc[key]``."""

    def __init__(self, inner, acc: dict, key: str, method: str):
        self._inner, self._acc, self._key, self._method = inner, acc, key, method

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self._acc[self._key] += time.perf_counter() - t0
        return timed

    def __call__(self, *a, **kw):
        self.__dict__["last_args"] = a
        t0 = time.perf_counter()
        try:
            return self._inner(*a, **kw)
        finally:
            self._acc[self._key] += time.perf_counter() - t0


def _profiled_options(prefix: str):
    """Wrap ort_env.session_options so every session of this process profiles to ``prefix``."""
    import edgetune.runtime.ort_env as ort_env
    import edgetune.runtime.sessions as sessions
    import edgetune.train.engines as engines

    plain = ort_env.session_options
    count = [0]

    def options(threads: int = 0):  # a prefix per session: two may start within one timestamp
        opts = plain(threads)
        opts.enable_profiling = True
        count[0] += 1
        opts.profile_file_prefix = f"{prefix}-{count[0]}"
        return opts

    sessions.session_options = options
    sessions.SessionCache.options = property(lambda self: options(self.threads))  # one per session
    engines.session_options = options


def run(spec: dict, result: dict, status) -> None:
    import onnxruntime  # noqa: F401  (edgetune imports it lazily)

    from edgetune.bundle import Bundle
    from edgetune.runtime.sessions import SessionCache
    from edgetune.train import TrainConfig, Trainer
    from edgetune.train.inputs import load_data

    result["rss"]["imported"] = status("VmRSS")  # the libraries (edgetune, numpy, onnxruntime)
    if spec.get("profile") and spec["mode"] == "adaptive":
        _profiled_options(spec["profile"])
    acc: dict[str, float] = defaultdict(float)
    saved_bytes = [0]
    kinds: dict[str, tuple[str, str, list[str]]] = {}  # graph file → (part kind, variant, saved)
    plain_run = SessionCache.run_ort

    def run_ort(self, file, outputs, values):
        t0 = time.perf_counter()
        out = plain_run(self, file, outputs, values)
        kind, variant, saved = kinds.get(file, ("?", file, []))
        acc[f"{kind} {variant}"] += time.perf_counter() - t0
        saved_bytes[0] += sum(_ort_nbytes(v) for n, v in zip(outputs, out) if n in saved)
        return out

    SessionCache.run_ort = run_ort
    bundle = Bundle.open(spec["bundle"])
    data = load_data(bundle, spec["data"])
    cfg = TrainConfig(steps=spec["steps"], batch_size=spec["batch"], lr=1e-4,
                      schedule=spec["schedule"], mode=spec["mode"], threads=spec["threads"])
    steps: list[dict] = []

    def on_step(record):
        steps.append({"time": record["step_time"], "parts": dict(acc), "saved": saved_bytes[0],
                      "tokens": record["tokens"], "keep": record["tokens_kept"],
                      "trained": record["layers_trained"]})
        acc.clear()
        saved_bytes[0] = 0
        if len(steps) == 1:
            result["rss"]["after_step1"] = status("VmRSS")

    trainer = Trainer(bundle, data, None, cfg, callbacks=[on_step])
    result["rss"]["engine_open"] = status("VmRSS")
    eng = trainer.engine
    result["mode"] = trainer.config.mode
    memory: dict[str, float] = {}
    if trainer.config.mode == "static":
        params = {n: np.asarray(p.data) for n, p in eng.state.parameters}
        trainable = set(eng.trainable)
        eng.module = _Timed(eng.module, acc, "static training graph", "__call__")
        eng.module.last_args = None
        eng.optimizer = _Timed(eng.optimizer, acc, "static optimizer", "step")
    else:
        runner = eng.runner
        levers = spec.get("levers", {})
        if not levers.get("store", True):
            runner.store = set()
        if not levers.get("dense", True):
            for info in runner.parts.values():
                info.pop("dense", None)
        from edgetune.runtime.adaptive import twins

        for part, info in [(p, t) for p, whole in runner.parts.items() for t in twins(whole)]:
            kind = "block" if part.startswith("block_") else part
            for variant, file in info["graphs"].items():
                v = variant.partition("_")[2]
                saved = [s for s in info.get("saved", {}).get(v, []) if s not in info["outputs"]] \
                    if variant.startswith("forward_") else []
                kinds[file] = (kind, variant, saved)
        params = dict(runner.params)
        trainable = set(eng.trainable)
    memory["params_all"] = sum(a.nbytes for a in params.values())
    memory["params_trainable"] = sum(a.nbytes for n, a in params.items() if n in trainable)
    memory["adamw_moments"] = 2 * memory["params_trainable"]
    memory["gradients"] = memory["params_trainable"]
    del params
    trainer.fit()
    timed = steps[1:] or steps
    result["s_per_step"] = statistics.median(s["time"] for s in timed)
    keys = sorted({k for s in timed for k in s["parts"]})
    result["breakdown"] = {k: statistics.median(s["parts"].get(k, 0.0) for s in timed) for k in keys}
    if trainer.config.mode == "adaptive":
        memory["saved_for_backward"] = statistics.median(s["saved"] for s in timed)
    result["memory"] = memory
    result["rss"]["end"] = status("VmRSS")
    result["steps"] = len(steps)
    result["plans"] = [{k: s[k] for k in ("tokens", "keep", "trained")} for s in timed]
    if spec.get("profile") and trainer.config.mode == "static":
        folder = bundle.mode_dir("static")
        feeds = dict(zip(eng._train_inputs, eng.module.last_args))
        params = {n: np.asarray(p.data) for n, p in eng.state.parameters}
        del trainer, eng
        result["profile"] = profile_static(folder, feeds, params, spec["profile"], len(timed))
    elif spec.get("profile"):
        files = {f: s.end_profiling() for f, s in eng.runner.sessions._sessions.items()}
        result["profile"] = summarize_profiles([(p, "backward" in f) for f, p in files.items()],
                                               len(steps), None)


def profile_static(folder: Path, feeds: dict, params: dict, prefix: str, runs: int) -> dict:
    """ORT's profiler on the static training graph itself, run ``runs`` times as a plain
    InferenceSession (the training build runs its gradient ops) on the step's own inputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(Path(folder) / "training_model.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    shapes = {i.name: i for i in sess.get_inputs()}
    values = {**feeds, **params, "lazy_reset_grad": np.array([True])}
    for name in shapes:
        if name.endswith("_grad.accumulation.buffer"):
            values[name] = np.zeros_like(params[name[: -len("_grad.accumulation.buffer")]])
    outs = [o.name for o in sess.get_outputs()]
    for _ in range(runs):
        sess.run(outs, {n: values[n] for n in shapes})
    return summarize_profiles([(sess.end_profiling(), False)], runs, folder)


def summarize_profiles(files: list[tuple[str, bool]], steps: int, folder) -> dict:
    """Forward / backward kernel time per step and the top op types, from ORT's profile files;
    the bytes forward nodes hand to gradient nodes (static: read from the training graph)."""
    fwd = bwd = 0.0
    ops: dict[str, float] = defaultdict(float)
    out_size: dict[str, int] = {}
    for path, backward in files:
        for ev in _events(Path(path).read_text()):
            if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
                continue
            node = ev["name"][: -len("_kernel_time")]
            dur = ev["dur"] / 1e6
            args = ev.get("args", {})
            is_bwd = "Grad" in node or backward
            if is_bwd:
                bwd += dur
            else:
                fwd += dur
            ops[("bwd " if is_bwd else "fwd ") + args.get("op_name", "?")] += dur
            out_size[node] = max(out_size.get(node, 0), int(args.get("output_size", 0) or 0))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:int(os.environ.get("TOP_OPS", 8))]
    return {"forward_s": fwd / steps, "backward_s": bwd / steps,
            "top_ops": [(k, v / steps) for k, v in top],
            "saved_bytes": _static_saved(folder, out_size)}


def _events(text: str) -> list[dict]:
    """The events of a profile file; ORT's training Module writes its train and eval sessions'
    arrays into one file when they share a prefix."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos] in " \n\r\t,":
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = dec.raw_decode(text, pos)
        out.extend(obj if isinstance(obj, list) else [obj])


def _static_saved(folder, out_size: dict[str, int]) -> int:
    """Output bytes of forward nodes whose outputs a gradient node reads, in the static training
    graph (0 where there is none or onnx is missing)."""
    if folder is None or not (Path(folder) / "training_model.onnx").is_file():
        return 0
    try:
        import onnx
    except ImportError:
        return 0
    g = onnx.load_model(str(Path(folder) / "training_model.onnx"), load_external_data=False).graph
    grad_inputs = {i for n in g.node if "Grad" in n.name for i in n.input}
    return sum(out_size.get(n.name, 0) for n in g.node
               if "Grad" not in n.name and grad_inputs.intersection(n.output))
