"""Nearest-neighbour search over a memory bank, torch-free: the same code in training and on the line."""
