"""MRAS, the A/V Authentication protocol (MS-AVEDGEA): the XML codec and an asyncio client.

`um.mras.codec` is sans-I/O (bytes <-> values, hostile-input safe); the edge
serves with it (edge.auth) and `um.mras.client` asks with it.
"""

from um.mras.codec import (
                           CONTENT_TYPE,
                           NAMESPACE,
                           Credentials,
                           CredentialsRequest,
                           CredentialsResponse,
                           MediaRelay,
                           MrasError,
                           Request,
                           Response,
                           decode_request,
                           decode_response,
                           encode_request,
                           encode_response,
)

__all__ = ["CONTENT_TYPE", "NAMESPACE", "Credentials", "CredentialsRequest", "CredentialsResponse",
           "MediaRelay", "MrasError", "Request", "Response", "decode_request", "decode_response",
           "encode_request", "encode_response"]
