"""The project's name and version, as sent in outbound user-agent headers."""

NAME = "webhooks-platform"
VERSION = "1.0.0"
USER_AGENT = f"{NAME}/{VERSION}"
