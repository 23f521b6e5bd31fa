"""Every Redis key Consulta uses, in one place."""

PREFIX = "consulta:"
CONVERSATION = PREFIX + "conv:"  # + contact id → the conversation JSON
LOCK = PREFIX + "lock:"  # + contact id → "<process id>|<token>" of the inbox lock's holder
ANOTHER_PASS = PREFIX + "more:"  # + contact id → the holder is asked to look for work again
OUTBOUND = PREFIX + "outbound"  # list of queue items (a turn's outbound message ids)
OUTBOUND_WORKING = PREFIX + "outbound:working:"  # + process id → items that process is sending
SENT = PREFIX + "sent:"  # + outbound message id → provider id, once the provider accepted it
ALIVE = PREFIX + "alive:"  # + process id → present while that process is alive (short TTL)
EPOCH = PREFIX + "epoch"  # set once per Redis lifetime: missing means Redis lost its data
SPOOL = PREFIX + "spool"  # list of webhooks waiting for the database (JSON, oldest first)
SPOOL_REPLAYER = PREFIX + "spool:replayer"  # the process replaying the spool (short TTL)
BROADCAST_SENT = PREFIX + "broadcast:sent:"  # + recipient id → provider id, once accepted
BROADCAST_SENDING = PREFIX + "broadcast:sending:"  # + recipient id → POSIX time a send began
PACE = PREFIX + "pace:"  # + sender ("twilio:whatsapp:+52…") → its send-rate tat (µs; idle: gone)
