"""``python -m tensorslim``: the same command line as the ``tensorslim`` script."""

from tensorslim.cli import main

main()
