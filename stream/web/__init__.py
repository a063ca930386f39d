"""Shell: the planners' dashboard (aiohttp), read-only on the Redis key layout."""
