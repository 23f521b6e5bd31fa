"""Fault tests: real serve and worker processes while PostgreSQL, Redis or they fail."""
