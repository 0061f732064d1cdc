"""flawscope.runtime."""
