"""``python -m humanliff.cli``."""

from humanliff.cli import main

main()
