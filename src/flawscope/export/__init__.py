"""flawscope.export."""
