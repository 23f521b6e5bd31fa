"""Consulta: ultra-short consultations for participatory planning over WhatsApp, SMS and Telegram.

One import package over the folders the project is laid out in: `consulta.adapters` (one module
per channel), `consulta.flows` (flows and the engine), `consulta.storage` (SQL and Redis),
`consulta.bot` (the processes that wire them) and `consulta.locales` (the message catalogs).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("consulta")
except PackageNotFoundError:  # pragma: no cover - running from a checkout that was never installed
    __version__ = "0+unknown"
