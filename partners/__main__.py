"""`python -m partners`: the same as the `cleanroom-partner` command."""

from partners.cli import main

main()
