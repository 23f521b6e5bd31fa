"""Every Redis key Consulta uses, in one place."""

PREFIX = "consulta:"
CONVERSATION = PREFIX + "conv:"  # + contact id → the conversation JSON
LOCK = PREFIX + "lock:"  # + contact id → the per-contact inbox lock
OUTBOUND = PREFIX + "outbound"  # list of outbound message ids waiting to be sent
OUTBOUND_WORKING = PREFIX + "outbound:working:"  # + worker id → ids being sent
INBOX = PREFIX + "inbox"  # list of contact ids with inbound waiting (for workers)
