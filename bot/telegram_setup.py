"""Registering the Telegram bot: its webhook and its command menu in the three languages."""

from __future__ import annotations

from telegram import BotCommand

from adapters.telegram import ALLOWED_UPDATES, COMMANDS, PATH, TelegramChannel
from flows.i18n import LANGUAGES, t

__all__ = ["set_webhook"]


async def set_webhook(channel: TelegramChannel, default_language: str) -> str:
    """setWebhook with the secret, and setMyCommands per language. Returns the webhook URL."""
    bot = await channel.ensure_bot()
    url = channel.config.public_url + PATH
    await bot.set_webhook(
        url=url, secret_token=channel.config.secret, allowed_updates=ALLOWED_UPDATES
    )
    for lang in (*LANGUAGES, None):  # None: everyone whose app speaks none of the three
        commands = [BotCommand(c, t(lang or default_language, f"command-{c}")) for c in COMMANDS]
        await bot.set_my_commands(commands, language_code=lang)
    return url
