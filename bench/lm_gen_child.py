"""edgetune's side of bench/lm.py's generation row (imported by its child, ``import torch``
blocked): the bundle's decoder graph on onnxruntime, greedy, timed after one warm-up."""

from __future__ import annotations

import statistics
import time


def run(spec: dict, result: dict, status) -> None:
    from edgetune.generate import Generator, Sampling, open_source

    src = open_source(spec["bundle"])
    gen = Generator(src.graph, src.spec, src.initial_past, spec["threads"])
    sampling = Sampling(max_new_tokens=spec["new_tokens"])
    list(gen.ids(spec["prompt"], Sampling(max_new_tokens=4)))  # warm-up
    times = []
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        ids = list(gen.ids(spec["prompt"], sampling))
        times.append(time.perf_counter() - t)
    result["tokens"], result["seconds"] = ids, statistics.median(times)
