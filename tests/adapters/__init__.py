"""Tests of the channel adapters, each against a double of its remote API on loopback."""
