"""`python -m pivot` runs the command line."""

from pivot.cli.entry import main

main()
