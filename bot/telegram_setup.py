"""Staff's Telegram tasks: the webhook and command menus, neighbourhood groups, invitations
and native polls."""

from __future__ import annotations

import re
from collections.abc import Collection

from telegram import BotCommand

from consulta.adapters.telegram import ALLOWED_UPDATES, CHANNEL, COMMANDS, PATH, TelegramChannel
from consulta.flows.i18n import LANGUAGES, N_, t
from consulta.flows.model import Flow
from consulta.storage.groups import GroupInfo, Groups

__all__ = ["StaffError", "invite", "post_poll", "register_group", "set_webhook"]

MAX_POLL_OPTIONS = 10


# The command menu's descriptions, one per command of the channel.
MENU = {
    "help": N_("command-help"),
    "back": N_("command-back"),
    "restart": N_("command-restart"),
    "stop": N_("command-stop"),
    "language": N_("command-language"),
}


async def set_webhook(channel: TelegramChannel, default_language: str) -> str:
    """setWebhook with the secret, and setMyCommands per language. Returns the webhook URL."""
    bot = await channel.ensure_bot()
    url = channel.config.public_url + PATH
    await bot.set_webhook(
        url=url, secret_token=channel.config.secret, allowed_updates=ALLOWED_UPDATES
    )
    for lang in (*LANGUAGES, None):  # None: everyone whose app speaks none of the three
        commands = [BotCommand(c, t(lang or default_language, MENU[c])) for c in COMMANDS]
        await bot.set_my_commands(commands, language_code=lang)
    return url


class StaffError(ValueError):
    """A staff request that cannot be carried out, with the reason to show."""


TERRITORY = re.compile(r"^[a-z0-9-]{1,40}$")


async def register_group(
    groups: Groups,
    chat: str,
    territory: str,
    language: str | None,
    known: Collection[str] = (),
) -> str:
    """Give a group its territory: a code of the catalogue (`known`; any well-formed code while
    no territory has been imported)."""
    if not TERRITORY.match(territory):
        raise StaffError("a territory is 1 to 40 lower-case letters, digits or hyphens")
    if known and territory not in known:
        raise StaffError(
            f"no territory {territory!r} in the catalogue (`consulta territories list` shows them)"
        )
    group = await groups.register(CHANNEL, chat, territory, language)
    return f"group {chat} ({group.title or 'no title yet'}) → territory {territory}"


async def _group(groups: Groups, chat: str) -> GroupInfo:
    group = await groups.get(CHANNEL, chat)
    if group is None or not group.territory:
        raise StaffError(f"group {chat} is not registered: consulta telegram groups add first")
    if not group.active:
        raise StaffError(f"the bot is no longer in group {chat}")
    return group


def _flow(flows: dict[str, Flow], flow_id: str) -> Flow:
    if flow_id not in flows:
        raise StaffError(f"no flow {flow_id!r}; flows: {', '.join(sorted(flows))}")
    return flows[flow_id]


async def invite(
    channel: TelegramChannel,
    groups: Groups,
    flows: dict[str, Flow],
    chat: str,
    flow_id: str,
    default_language: str,
) -> str:
    """Post to a group a button that opens the survey in a private chat, territory preset."""
    group, flow = await _group(groups, chat), _flow(flows, flow_id)
    lang = group.language or default_language
    url = await channel.link(f"{flow.deep_link or flow.id}_{group.territory}")
    text = t(lang, "invite-text", title=flow.title.get_text(lang))
    await channel.post_invitation(chat, text, t(lang, "invite-button"), url)
    return url


async def post_poll(
    channel: TelegramChannel,
    groups: Groups,
    flows: dict[str, Flow],
    chat: str,
    flow_id: str,
    state_name: str,
    default_language: str,
) -> str:
    """Post one question of a flow as a native, non-anonymous poll; votes become answers."""
    group, flow = await _group(groups, chat), _flow(flows, flow_id)
    state = flow.states.get(state_name)
    if state is None or not state.kind.chooses:
        raise StaffError(f"{state_name!r} is not a choice question of {flow_id}")
    if not 2 <= len(state.choices) <= MAX_POLL_OPTIONS:
        raise StaffError(f"a poll takes 2 to {MAX_POLL_OPTIONS} choices")
    lang = group.language or default_language
    multiple = state.kind.multiple
    poll_id = await channel.post_poll(
        chat, state.text.get_text(lang), [c.label.get_text(lang) for c in state.choices], multiple
    )
    await groups.save_poll(
        CHANNEL,
        poll_id,
        group,
        flow.id,
        flow.version,
        state.question_key,
        state.name,
        [c.key for c in state.choices],
        multiple,
    )
    return poll_id
