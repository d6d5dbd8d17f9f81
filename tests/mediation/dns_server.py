"""A test DNS server on 127.0.0.1 (twisted.names): SRV and A records from a JSON zone file.

Run: python -m tests.mediation.dns_server PORT ZONE.json [ADDRESS...]; it prints "ready" once listening. The
zone file is re-read on every query, so tests can change answers while it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.names import dns, error, server


class JsonZone:
    """Answers from {"name": [["SRV", priority, weight, port, target, ttl] | ["A", address, ttl]]}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, query: dns.Query, timeout: object = None) -> defer.Deferred:
        zone = json.loads(self.path.read_text())
        name = query.name.name.decode().lower().rstrip(".")
        answers = []
        for record in zone.get(name, []):
            if record[0] == "SRV" and query.type == dns.SRV:
                _, priority, weight, port, target, ttl = record
                payload = dns.Record_SRV(priority, weight, port, target, ttl=ttl)
            elif record[0] == "A" and query.type == dns.A:
                payload = dns.Record_A(record[1], ttl=record[2])
            else:
                continue
            answers.append(dns.RRHeader(name=name, type=payload.TYPE, payload=payload, ttl=payload.ttl,
                                        auth=True))
        if name not in zone:
            return defer.fail(error.DomainError(name))
        return defer.succeed((answers, [], []))  # an empty answer is NOERROR/NODATA


def main() -> None:
    port, zone = int(sys.argv[1]), Path(sys.argv[2])
    interfaces = sys.argv[3:] or ["127.0.0.1"]  # the NAT lab serves its namespaces' addresses
    factory = server.DNSServerFactory(authorities=[JsonZone(zone)])
    factory.noisy = False
    for interface in interfaces:
        reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=interface)
        reactor.listenTCP(port, factory, interface=interface)
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
