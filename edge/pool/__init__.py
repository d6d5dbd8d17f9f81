"""The edge pool: membership with a TTL heartbeat, pool-wide quotas, shared status (memory or Redis)."""
