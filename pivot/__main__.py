"""`python -m pivot` runs the command line."""

from pivot.cli import main

main()
