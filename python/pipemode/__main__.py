"""`python -m pipemode` runs the `pipemode` command."""

from pipemode.cli import main

raise SystemExit(main())
