"""``python -m fleetd`` is the ``fleetd`` command."""

from fleetd.cli.main import main

raise SystemExit(main())
