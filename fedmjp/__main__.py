"""`python -m fedmjp` is the `fedmjp` command."""

from .cli import main

main()
