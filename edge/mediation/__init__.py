"""Mediation server integration: discovery (static or DNS SRV), registration and keepalive."""
