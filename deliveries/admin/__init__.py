"""Django admin for events, deliveries and the dead-letter queue.

Importing the submodules registers their ModelAdmins with the default site.
"""

from deliveries.admin import dead_letters, deliveries, events

__all__ = ["dead_letters", "deliveries", "events"]
