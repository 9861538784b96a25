"""`python -m overhop` behaves exactly like the `overhop` command."""

from overhop.cli import main

main()
