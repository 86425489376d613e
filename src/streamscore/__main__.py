"""Allow ``python -m streamscore``."""

from streamscore.cli import main

main()
