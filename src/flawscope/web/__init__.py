"""flawscope.web."""
