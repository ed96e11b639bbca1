"""The click commands and what they print."""
