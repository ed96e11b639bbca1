"""Remotes: object stores (a local folder, S3, any fsspec filesystem), the pack and index
format, push and fetch.
"""
