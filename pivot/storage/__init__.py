"""Content-addressed storage: hashing, local cache, run records, remotes."""
