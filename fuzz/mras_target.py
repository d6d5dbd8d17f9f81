"""atheris: the MRAS XML codec returns a request or raises MrasError (no DTDs, no entities)."""

from _runner import run


def load():  # type: ignore[no-untyped-def]
    from um.mras import codec

    def target(data: bytes) -> None:
        try:
            codec.decode_request(data)
        except codec.MrasError:
            pass

    return target


if __name__ == "__main__":
    run(load)
