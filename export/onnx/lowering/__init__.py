"""Lower ONNX Runtime's training-only ops to standard ONNX, so any ORT build runs the graphs.

ORT's gradient builder emits ``com.microsoft`` kernels that only the (deprecated) training
build has: ``SoftmaxGrad_13``, ``GeluGrad``, ``LayerNormalizationGrad``, ``SliceGrad``, … Each has
a short closed form in standard ops (opset 17); :func:`lower` rewrites every such node with the
lowering registered for its op type (one module per family: ``activations``, ``norm``,
``indexing``, ``loss``, ``conv``). Contrib ops that stock CPU and CUDA builds implement
(:data:`STOCK_CONTRIB`) stay; any other non-standard op is an error, never a silent pass.
The lowerings are for float32 graphs (their constants are float32), what bundles hold.
"""

from edgetune.export.onnx.lowering import activations, conv, indexing, loss, norm  # noqa: F401  (register)
from edgetune.export.onnx.lowering.base import LOWERINGS, STOCK_CONTRIB, LoweringError, lower, nonstandard_ops

__all__ = ["LOWERINGS", "STOCK_CONTRIB", "LoweringError", "lower", "nonstandard_ops"]
