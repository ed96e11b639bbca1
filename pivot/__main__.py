"""`python -m pivot` runs the command line."""

from pivot.cli.main import main

main()
