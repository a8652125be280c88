"""`python -m connector`: the same as the `fragment-connector` command."""

from connector.cli import main

main()
