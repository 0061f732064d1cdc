"""flawscope.features."""
