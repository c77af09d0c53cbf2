"""Thin HTTP handlers: decode, call the service, encode. One module per protocol."""
