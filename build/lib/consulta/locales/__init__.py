"""The system messages in es, en and fr as gettext catalogs (`consulta.pot` is the template),
shipped as package data and read with `importlib.resources`."""
