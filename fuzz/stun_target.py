"""atheris: edge.stun.decode must return a Message or raise StunDecodeError."""

from _runner import run


def load():  # type: ignore[no-untyped-def]
    from edge import stun

    def target(data: bytes) -> None:
        try:
            stun.decode(data).verify_fingerprint()
        except stun.StunDecodeError:
            pass

    return target


if __name__ == "__main__":
    run(load)
