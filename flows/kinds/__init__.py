"""The kinds of state a flow is made of, one module each, and `KINDS`, the table naming them.

A kind knows how its question is asked, read, re-asked, checked, counted and exported (see
`base.Kind`). The engine, `flows check`, the API, exports and the Telegram setup ask a state's
kind rather than branching on its name, so a new kind is one module and one line here (and its
name in `flows/schema.json`'s list of types, for editors).
"""

from consulta.flows.kinds import (
    consent,
    date,
    end,
    location,
    message,
    multiple_choice,
    number,
    photo,
    scale,
    single_choice,
    text,
    yes_no,
)
from consulta.flows.kinds.base import Ask, Invalid, Kind, Problem, Reply

__all__ = ["KINDS", "Ask", "Invalid", "Kind", "Problem", "Reply"]

# A flow file's `type:` → its kind, in the order the schema and the README list them.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        message.Message(),
        single_choice.SingleChoice(),
        multiple_choice.MultipleChoice(),
        yes_no.YesNo(),
        scale.Scale(),
        number.Number(),
        text.Text(),
        location.Location(),
        photo.Photo(),
        date.Date(),
        consent.Consent(),
        end.End(),
    )
}
