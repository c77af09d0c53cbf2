"""Command-line interface (``ghacache``)."""
