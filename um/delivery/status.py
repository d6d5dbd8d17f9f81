"""Metric families of delivery and MWI (read at scrape time; labels are bounded: kinds, not addresses)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

ERROR_KINDS = ("connect", "tls", "tls-verify", "auth", "4xx", "5xx", "encoder", "store", "internal", "expired")


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _counter(name: str, doc: str, value: float, labels: list[str] | None = None,
             values: dict[tuple[str, ...], float] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels or [])
    if values is None:
        family.add_metric([], value)
    else:
        for key, each in sorted(values.items()):
            family.add_metric(list(key), each)
    return family


def metric_families(delivery: Any, mwi: Any) -> Iterable[Metric]:
    if delivery is not None:
        counters = delivery.counters
        queued = delivery.outbox.queued()
        now = time.time()
        yield _gauge("umedge_voicemail_outbox_queued", "Voicemails waiting in the outbox for the mail server",
                     len(queued))
        yield _gauge("umedge_voicemail_outbox_oldest_age_seconds", "Age of the oldest queued voicemail",
                     max((now - e.queued for e in queued), default=0.0))
        yield _gauge("umedge_voicemail_outbox_dead", "Voicemails in dead letters (refused for good)",
                     len(delivery.outbox.dead()))
        yield _counter("umedge_voicemail_delivered", "Voicemails the mail server accepted", counters["delivered"])
        yield _counter("umedge_voicemail_delivery_retried", "Delivery attempts that failed for now (retried "
                       "with backoff)", counters["retried"])
        yield _counter("umedge_voicemail_delivery_dead", "Voicemails put in dead letters", counters["dead"])
        yield _counter("umedge_voicemail_delivery_errors", "Failed delivery attempts by kind", 0, ["kind"],
                       {(kind,): float(counters[f"errors_{kind}"]) for kind in ERROR_KINDS})
        yield _counter("umedge_voicemail_imap_errors", "IMAP sync sessions that failed", counters["imap_errors"])
    if mwi is not None:
        yield _gauge("umedge_mwi_subscriptions", "Active message-summary subscriptions", len(mwi.table.by_key))
        yield _counter("umedge_mwi_notifies", "NOTIFYs sent, by outcome", 0, ["outcome"],
                       {(k,): float(mwi.counters[k]) for k in ("notify_ok", "notify_failed", "unsolicited_ok",
                                                              "unsolicited_failed")})


__all__ = ["metric_families"]
