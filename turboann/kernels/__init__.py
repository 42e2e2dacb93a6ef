"""Numba scan kernels and their NumPy reference twins."""
