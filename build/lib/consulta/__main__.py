"""`python -m consulta`: the same command line as `consulta`."""

from consulta.bot.cli import main

raise SystemExit(main())
