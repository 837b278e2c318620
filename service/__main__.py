"""`python -m service` is the `action-links` command."""

from service.cli import main

raise SystemExit(main())
