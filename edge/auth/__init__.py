"""The A/V Authentication service: short-lived media relay tokens for the TURN relay.

Three ways in, one policy (issuer.TokenIssuer) and one audit line per token:
  mras_sip  SIP SERVICE with MRAS XML over MTLS ([auth] mras_tls_port)
  https     POST /v1/credentials, JSON, pool-CA client cert or bearer API key ([auth] https_port)
  cli       `umedge token issue`, minted locally from the config's secret
Tokens are TURN REST API credentials (edge.tokens) signed with the first of
edge.auth.secrets.auth_secrets(config); any edge holding that secret
validates them without shared state.
"""
