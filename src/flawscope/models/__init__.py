"""flawscope.models."""
