"""Command modules: each module here registers its commands on :data:`tensorslim.clikit.app` when
imported (``tensorslim.cli`` imports them all). Modules whose name starts with ``_`` are skipped."""
