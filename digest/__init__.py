"""The weekly verdict digest: comparisons in, one rendered issue out, delivered once per subscriber."""

__version__ = "0.1.0"
