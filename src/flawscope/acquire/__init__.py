"""flawscope.acquire."""
