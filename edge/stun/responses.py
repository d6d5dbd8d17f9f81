"""Build responses that match a request.

A response must echo the request's method and transaction id (RFC 8489
§6.3); building it here keeps that rule in one place.  Integrity and
FINGERPRINT are added when the result is encoded, with the key the server
checked the request with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .attributes import encode_error_code, encode_unknown_attributes
from .constants import Attr, ErrorCode, MessageClass
from .message import Message

__all__ = ["make_success", "make_error", "make_unknown_attributes_error"]


def _check_request(request: Message) -> None:
    if request.msg_class != MessageClass.REQUEST:
        raise ValueError("only requests get responses (indications never do)")


def make_success(request: Message, attrs: Iterable[tuple[int, bytes]] = ()) -> Message:
    """A success response to ``request`` carrying ``attrs``."""
    _check_request(request)
    return Message(request.method, MessageClass.SUCCESS, request.transaction_id, attrs)


def make_error(
    request: Message,
    code: int,
    reason: str | None = None,
    extra_attrs: Iterable[tuple[int, bytes]] = (),
) -> Message:
    """An error response: ERROR-CODE first (standard phrase by default), then ``extra_attrs``."""
    _check_request(request)
    attributes = [(int(Attr.ERROR_CODE), encode_error_code(code, reason))]
    attributes.extend(extra_attrs)
    return Message(request.method, MessageClass.ERROR, request.transaction_id, attributes)


def make_unknown_attributes_error(
    request: Message, types: Sequence[int] | None = None
) -> Message:
    """The 420 response listing ``types`` (default: the request's unknown ones)."""
    if types is None:
        types = request.unknown_comprehension_required()
    return make_error(
        request,
        ErrorCode.UNKNOWN_ATTRIBUTE,
        extra_attrs=[(int(Attr.UNKNOWN_ATTRIBUTES), encode_unknown_attributes(types))],
    )
