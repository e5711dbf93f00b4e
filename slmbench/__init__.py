"""slmbench: is a small language model worth it? Latency, memory, energy and quality, measured."""

__version__ = "0.1.0"
