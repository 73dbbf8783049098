"""The ONNX Runtime exporter: static artifacts and ALaST's per-block gradient graphs."""

from edgetune.bundle import INDEX_FILE, PARAMS_FILE
from edgetune.export.onnx.adaptive import PartGraphs, export_adaptive
from edgetune.export.onnx.bundle import export_mode, prepare_model
from edgetune.export.onnx.static import export_static, trace_whole
from edgetune.export.onnx.trace import MAX_IR_VERSION, save_model, to_onnx

__all__ = [
    "INDEX_FILE", "MAX_IR_VERSION", "PARAMS_FILE", "PartGraphs", "export_adaptive",
    "export_mode", "export_static", "prepare_model", "save_model", "to_onnx", "trace_whole",
]
