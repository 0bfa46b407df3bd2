"""The outbound Bot API client: calls with retries, and delivery of queued notices in each user's language."""
