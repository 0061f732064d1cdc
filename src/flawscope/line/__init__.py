"""flawscope.line."""
