"""The fotoowl benchmark harness: `python -m bench [--quick]` (see README.md)."""
