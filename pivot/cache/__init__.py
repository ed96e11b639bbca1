"""The local content-addressed store: hashing, objects and local packs, checkout, the state
db, run records, gc.
"""
