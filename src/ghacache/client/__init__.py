"""Clients for cache servers; independent of the server package."""
