"""Format-independent algorithms in plain NumPy: quantization maths, statistics, search."""
