"""``python -m flawscope.cli``."""

from flawscope.cli.app import main

main()
