"""`python -m cleanroom`: the same as the `cleanroom` command."""

from cleanroom.cli import main

main()
