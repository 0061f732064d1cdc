"""flawscope.export: a trained bundle to a deployable, torch-free one (ONNX graph, thresholds, manifest)."""

from flawscope.export.onnx_export import export_bundle

__all__ = ["export_bundle"]
