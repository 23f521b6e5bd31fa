"""Channels: each module translates one channel to and from the internal message type."""
