"""Flows: surveys and reports as state machines, their checks, languages and the engine."""
