"""ghacache: the GitHub Actions cache as a first-class build-cache backend."""

from ghacache._version import __version__
from ghacache.errors import GhacacheError

__all__ = ["GhacacheError", "__version__"]
