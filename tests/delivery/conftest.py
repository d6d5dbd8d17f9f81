"""The Dovecot fixture of the delivery tests (tests/delivery/support.py), for the tests here."""

from tests.delivery.support import dovecot  # noqa: F401
