"""Message-waiting indication (RFC 3842 over RFC 6665) for the UM service, driven by the voicemail store."""
