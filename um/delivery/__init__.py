"""Unified messaging: every voicemail mailed to its mailbox (SMTP/LMTP) through a durable outbox in the store."""
