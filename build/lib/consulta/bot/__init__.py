"""The process: configuration, CLI, web server, per-contact inbox and outbound queue."""
