"""The kernels an int8 frozen base could run, per shape, side by side in one run.

    .venv/bin/python bench/int8_kernels.py [--python .venv-device/bin/python] [--model minilm-l6]
                                           [--rows 2048] [--threads 2] [--repeats 15] [--out DIR]

For each linear layer shape of the model (K × N, at ``--rows`` = batch × tokens rows) and both
orientations a training step runs (forward ``X·Wᵀ``; the input gradient ``dY·W``), one graph
per kernel, timed in a child process of ``--python`` (whose onnxruntime is measured; default
the device environment's, stock onnxruntime):

- ``fp32 input``: MatMul with W a graph input (what a float32 bundle runs: nothing pre-packed)
- ``fp32 const``: MatMul with W a constant initializer (MLAS pre-packs it)
- ``DQMM s7``: DynamicQuantizeMatMul, W int8 in [−63, 63] (what ``--base int8`` runs forward),
  ``DQMM s8``: W int8 in [−127, 127] (saturates pairwise sums on x86 without VNNI), ``DQMM u8``:
  W uint8 with zero point 128 (8 bits, no saturation; MLAS's slower u8·u8 kernel)
- ``NBits8 acc0`` / ``acc4``: MatMulNBits, 8-bit W in blocks of 32, float32 arithmetic / X
  quantized per row in blocks of 32 and int8 products (what ``--base int8`` runs for gradients)
- ``MMI2F``: DynamicQuantizeLinear + MatMulIntegerToFloat (the unfused pair)

Prints a table of milliseconds (median) and each kernel's speed against ``fp32 input``, plus
the relative error of each against the float64 product; writes ``OUT/int8_kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import last_error, say  # noqa: E402

SHAPES = {  # model → (K, N) of its linear layers (in, out)
    "minilm-l6": [(384, 384), (384, 1536), (1536, 384)],
    "vit-small": [(384, 1152), (384, 384), (384, 1536), (1536, 384)],
    "llama-100m": [(768, 768), (768, 256), (768, 2048), (2048, 768)],
}
KERNELS = ("fp32 input", "fp32 const", "DQMM s7", "DQMM s8", "DQMM u8", "NBits8 acc0", "NBits8 acc4", "MMI2F")


def graphs(k: int, n: int, folder: Path) -> dict[str, tuple[str, bool]]:
    """kernel → (model file, whether W is fed) for the product X (rows × k) · W (k × n)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgetune.quantize import quantize_blocks, quantize_columns

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    np.save(folder / f"w-{k}x{n}.npy", w)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])
    wi = helper.make_tensor_value_info("W", TensorProto.FLOAT, [k, n])
    ms = "com.microsoft"
    q7, s7 = quantize_columns(w)
    s = np.abs(w).max(axis=0) / 127
    qs = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    qu = (qs.astype(np.int16) + 128).astype(np.uint8)
    qb, sb = quantize_blocks(w)
    init = numpy_helper.from_array
    specs = {
        "fp32 input": ([helper.make_node("MatMul", ["x", "W"], ["y"])], [x, wi], []),
        "fp32 const": ([helper.make_node("MatMul", ["x", "W"], ["y"])], [x], [init(w, "W")]),
        "DQMM s7": ([helper.make_node("DynamicQuantizeMatMul", ["x", "Q", "s"], ["y"], domain=ms)], [x],
                    [init(q7, "Q"), init(s7, "s")]),
        "DQMM u8": ([helper.make_node("DynamicQuantizeMatMul", ["x", "Q", "s", "z"], ["y"], domain=ms)], [x],
                    [init(qu, "Q"), init(s, "s"), init(np.full(n, 128, np.uint8), "z")]),
        "DQMM s8": ([helper.make_node("DynamicQuantizeMatMul", ["x", "Q", "s", "z"], ["y"], domain=ms)], [x],
                    [init(qs, "Q"), init(s, "s"), init(np.zeros(n, np.int8), "z")]),
        "MMI2F": ([helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                   helper.make_node("MatMulIntegerToFloat", ["xq", "Q", "xs", "s", "xz", "z"], ["y"],
                                    domain=ms)],
                  [x], [init(qu, "Q"), init(s, "s"), init(np.full(n, 128, np.uint8), "z")]),
    }
    for level in (0, 4):
        specs[f"NBits8 acc{level}"] = (
            [helper.make_node("MatMulNBits", ["x", "B", "sb"], ["y"], domain=ms, K=k, N=n, bits=8,
                              block_size=qb.shape[2], accuracy_level=level)],
            [x], [init(qb, "B"), init(sb, "sb")])
    out = {}
    for name, (nodes, inputs, inits) in specs.items():
        g = helper.make_graph(nodes, name, inputs, [y], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
        m.ir_version = 10
        file = folder / f"{k}x{n}-{name.replace(' ', '_')}.onnx"
        file.write_bytes(m.SerializeToString())
        out[name] = (str(file), name == "fp32 input")
    return out


CHILD = """
import json, sys, time
import numpy as np
import onnxruntime as ort
spec = json.loads(sys.argv[1])
so = ort.SessionOptions(); so.intra_op_num_threads = spec["threads"]; so.inter_op_num_threads = 1
rng = np.random.default_rng(1)
w = np.load(spec["w"])
x = rng.standard_normal((spec["rows"], w.shape[0])).astype(np.float32)
ref = x.astype(np.float64) @ w.astype(np.float64)
out = {}
for name, (file, fed) in spec["graphs"].items():
    try:
        s = ort.InferenceSession(file, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        out[name] = {"error": str(e).splitlines()[0][:160]}
        continue
    feed = {"x": x, **({"W": w} if fed else {})}
    y = s.run(None, feed)[0]
    ts = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter(); s.run(None, feed); ts.append(time.perf_counter() - t0)
    ts.sort()
    out[name] = {"ms": 1e3 * ts[len(ts) // 2],
                 "rel_error": float(np.linalg.norm(y - ref) / np.linalg.norm(ref))}
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=str(ROOT / ".venv-device" / "bin" / "python"))
    p.add_argument("--model", choices=sorted(SHAPES), default="minilm-l6")
    p.add_argument("--rows", type=int, default=2048, help="batch × tokens (minilm-l6 at 32 × 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    version = subprocess.run([a.python, "-c", "import onnxruntime as o; print(o.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    shapes = []
    for k, n in SHAPES[a.model]:  # forward x·Wᵀ is (in → out); the input gradient dY·W (out → in)
        shapes += [(k, n, "forward"), (n, k, "input gradient")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, n, role in shapes:
            spec = {"graphs": graphs(k, n, Path(tmp)), "w": str(Path(tmp) / f"w-{k}x{n}.npy"),
                    "rows": a.rows, "threads": a.threads, "repeats": a.repeats}
            proc = subprocess.run([a.python, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{k}x{n}: {last_error(proc)}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append({"k": k, "n": n, "role": role, "kernels": res})
            say(f"{a.rows}x{k} @ {k}x{n} ({role}) done")
    lines = [f"onnxruntime {version}, {a.threads} threads, {a.rows} rows; ms (median of {a.repeats}) "
             "and speed vs fp32 input; relative error vs float64",
             "", "| shape | role | " + " | ".join(KERNELS) + " |", "|---|---|" + "---:|" * len(KERNELS)]
    for r in results:
        base = r["kernels"]["fp32 input"]["ms"]
        cells = []
        for kname in KERNELS:
            v = r["kernels"].get(kname, {})
            cells.append(f"n/a ({v['error'][:40]})" if "error" in v else
                         f"{v['ms']:.2f} ({base / v['ms']:.2f}×, {v['rel_error']:.0e})")
        lines.append(f"| {a.rows}×{r['k']} · {r['k']}×{r['n']} | {r['role']} | " + " | ".join(cells) + " |")
    say("\n".join(lines))
    report = {"onnxruntime": version, "threads": a.threads, "rows": a.rows, "model": a.model,
              "results": results}
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "int8_kernels.json").write_text(json.dumps(report, indent=1))
        (a.out / "int8_kernels.md").write_text("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    main()
