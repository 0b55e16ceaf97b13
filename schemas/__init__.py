"""Event contracts (``schemas.events``) and the topic registry (``schemas.topics``)."""
