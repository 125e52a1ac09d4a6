"""notify: delivers case events to departments' webhooks and notices to citizens."""
