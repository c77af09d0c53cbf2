"""BuildKit ``type=gha`` cache backend on ghacache's client: export from and import into
BuildKit's local cache directory, with index merge and garbage collection."""
