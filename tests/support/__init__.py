"""Test support: cosimulation vectors, the reference's expected results, simulator drivers, shared helpers."""
