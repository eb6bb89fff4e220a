"""`python -m livegen` runs the command line."""

from livegen.cli import main

raise SystemExit(main())
