"""NumPy references that the torch code is checked against (see docs/math.md)."""
