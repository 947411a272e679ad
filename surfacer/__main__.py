"""`python -m surfacer`: the same front door as the `surfacer` command."""

from surfacer.cli import main

main()
