"""The coordinator: a thin, authenticated aiohttp API that validates and enqueues work."""
