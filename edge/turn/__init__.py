"""The A/V Edge media relay: an RFC 8656 TURN server (sans-I/O engine + asyncio/Twisted I/O)."""
