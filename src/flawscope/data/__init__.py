"""flawscope.data."""
