"""Running applications on this host: the asyncio driver of the lifecycle engine."""
