"""ralph: run AI coding agents in parallel on one git repository and land their verified work."""

__version__ = "0.1.0"
