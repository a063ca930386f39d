"""Prometheus metrics of a worker: population per region and pipeline health.

Names follow Prometheus conventions (``defacto_`` prefix, base units, ``_total`` counters); labels
are regions, outcomes, reasons, encodings, partitions and (foreign SIMs) a small set of countries
and stay classes, never H3 cells or devices.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from estimators.units import SECOND_MS
from stream.timefmt import parse_iso_ms

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DELAY_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class WorkerMetrics:
    """The worker's metric families, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("defacto_messages_consumed_total", "Kafka messages consumed",
                                ["encoding"], registry=r)
        self.pings = Counter("defacto_pings_consumed_total",
                             "Pings consumed, by outcome (accepted, rejected, duplicate)",
                             ["outcome"], registry=r)
        self.rejects = Counter("defacto_pings_rejected_total",
                               "Rejected pings and messages, by reason (sent to the dead-letter topic)",
                               ["reason"], registry=r)
        self.dead_letter_errors = Counter("defacto_dead_letter_errors_total",
                                          "Rejects that could not be written to the dead-letter topic",
                                          registry=r)
        self.lag = Gauge("defacto_consumer_lag_messages", "Messages behind the partition end",
                         ["partition"], registry=r)
        self.batch_seconds = Histogram("defacto_batch_duration_seconds",
                                       "Time to process one batch of messages",
                                       buckets=LATENCY_BUCKETS_S, registry=r)
        self.publish_seconds = Histogram("defacto_publish_duration_seconds",
                                         "Time of one publishing round: the windows every "
                                         "partition has closed, estimated and written to Redis",
                                         buckets=LATENCY_BUCKETS_S, registry=r)
        self.event_delay = Gauge("defacto_event_time_delay_seconds",
                                 "Wall clock minus the newest event time processed", registry=r)
        self.snapshot_delay = Histogram("defacto_snapshot_delay_seconds",
                                        "Wall clock at publish minus the snapshot's event time",
                                        buckets=DELAY_BUCKETS_S, registry=r)
        self.last_publish = Gauge("defacto_last_publish_timestamp_seconds",
                                  "Unix time of the last snapshot this worker saw published",
                                  registry=r)
        self.last_snapshot = Gauge("defacto_snapshot_timestamp_seconds",
                                   "Event time of the latest published snapshot", registry=r)
        self.redis_errors = Counter("defacto_redis_errors_total",
                                    "Failed Redis operations (retried later)", registry=r)
        self.checkpoints = Counter("defacto_checkpoints_total",
                                   "Checkpoints stored, by kind (base: every device; delta: the "
                                   "devices changed since the base)", ["kind"], registry=r)
        self.checkpoint_bytes = Gauge("defacto_checkpoint_bytes",
                                      "Size of the latest checkpoint stored, by kind", ["kind"],
                                      registry=r)
        self.offset_gaps = Counter("defacto_offset_gaps_total",
                                   "Offsets skipped because Kafka no longer held them", registry=r)
        self.partitions = Gauge("defacto_partitions_assigned", "Partitions this worker holds",
                                registry=r)
        self.partition_stopped = Gauge(
            "defacto_partition_stopped",
            "1 for a partition this worker stopped for good: reason topic_recreated (its topic is "
            "not the one its state came from) or partition_count (not the deployment's)",
            ["partition", "reason"], registry=r)
        self.publish_refused = Gauge(
            "defacto_publish_refused",
            "1 while the next window cannot be published: reason settings_mismatch (a tally "
            "taken with other settings)", ["reason"], registry=r)
        self.windows_skipped = Counter(
            "defacto_windows_skipped_total",
            "Windows never published because a partition's tally was gone (missing_tally)",
            ["reason"], registry=r)
        self.windows_skipped.labels("missing_tally")  # exported at 0: increase() sees the first
        self.redis_data_lost = Counter(
            "defacto_redis_data_lost_total",
            "Times Redis was found to have lost defacto's keys (state rewritten by this worker)",
            registry=r)
        self.redis_eviction_unsafe = Gauge(
            "defacto_redis_eviction_unsafe",
            "1 when Redis's maxmemory-policy may evict defacto's keys", registry=r)
        fig = ["region"]
        self.present = Gauge("defacto_present_population", "People present now", fig, registry=r)
        self.resident = Gauge("defacto_resident_population", "People living here (de facto)",
                              fig, registry=r)
        self.resident_lo = Gauge("defacto_resident_population_lower",
                                 "Lower end of the 90 % interval of resident", fig, registry=r)
        self.resident_hi = Gauge("defacto_resident_population_upper",
                                 "Upper end of the 90 % interval of resident", fig, registry=r)
        self.registered = Gauge("defacto_registered_population", "People registered here",
                                fig, registry=r)
        self.gap_ratio = Gauge("defacto_gap_ratio", "(resident - registered) / registered",
                               fig, registry=r)
        self.gap_ratio_lo = Gauge("defacto_gap_ratio_lower",
                                  "Gap ratio at the lower end of the resident interval", fig,
                                  registry=r)
        self.gap_ratio_hi = Gauge("defacto_gap_ratio_upper",
                                  "Gap ratio at the upper end of the resident interval", fig,
                                  registry=r)
        self.gap_threshold = Gauge("defacto_gap_threshold_ratio",
                                   "Gap ratio beyond which a region is alerted (--gap-threshold)",
                                   registry=r)
        self.window = Gauge("defacto_window_seconds", "Snapshot interval (--every)", registry=r)
        self.warming_up = Gauge(
            "defacto_warming_up",
            "1 while the latest snapshot's figures are warming up (the engine has not observed "
            "the activity window, figure=present, or also enough nights, figure=resident: the "
            "gap gauges are then absent and gap alerts are held)", ["figure"], registry=r)
        self.warming_up_left = Gauge(
            "defacto_warming_up_remaining_seconds",
            "Event time left until the figure is warm, as of the latest snapshot (0 when warm; "
            "absent when not known: nothing observed yet)", ["figure"], registry=r)
        mig = ["region", "window"]  # window: week, month (open), last_week, last_month (closed)
        self.net_migration = Gauge("defacto_net_migration", "Net migration (people) in the window",
                                   mig, registry=r)
        self.net_migration_lo = Gauge("defacto_net_migration_lower",
                                      "Lower end of the 90 % interval of net migration", mig,
                                      registry=r)
        self.net_migration_hi = Gauge("defacto_net_migration_upper",
                                      "Upper end of the 90 % interval of net migration", mig,
                                      registry=r)
        self.net_per_1000_lo = Gauge("defacto_net_migration_per_1000_lower",
                                     "Lower end of the interval of net migration per 1,000 residents",
                                     mig, registry=r)
        self.net_per_1000_hi = Gauge("defacto_net_migration_per_1000_upper",
                                     "Upper end of the interval of net migration per 1,000 residents",
                                     mig, registry=r)
        self.rural_balance = Gauge("defacto_rural_balance",
                                   "Rural regions' net migration (people) in the window", ["window"],
                                   registry=r)
        self.migration_alert_rate = Gauge(
            "defacto_migration_alert_rate_per_1000",
            "Weekly net inflow per 1,000 residents beyond which a region is alerted "
            "(--migration-alert-rate)", registry=r)
        self.foreign_arrivals = Gauge(
            "defacto_foreign_arrivals",
            "Foreign SIMs arriving (stays begun) in the window, by country of the SIM (the period's "
            "largest countries, 'other', 'all'); devices, null (absent) under k",
            ["window", "country"], registry=r)
        self.foreign_stock = Gauge(
            "defacto_foreign_stock",
            "Foreign SIMs staying now (as of the latest night evaluated), by country and stay "
            "class (same_day, short, medium, long, all); devices", ["country", "class"],
            registry=r)
        self.foreign_usual_residents = Gauge(
            "defacto_foreign_usual_residents",
            "Foreign SIMs staying now that spent at least 183 of the last 365 nights in stays "
            "(usual residents with a foreign SIM, beside resident population); devices",
            ["region"], registry=r)
        self.started = Gauge("defacto_worker_start_timestamp_seconds",
                             "Unix time this worker process started", registry=r)
        self.started.set_to_current_time()

    def configure(self, window_s: float, gap_threshold: float,
                  migration_alert_rate: float = 5.0) -> None:
        """Export the settings that alert rules compare against."""
        self.window.set(window_s)
        self.gap_threshold.set(gap_threshold)
        self.migration_alert_rate.set(migration_alert_rate)

    def show_flows(self, flows: dict[str, dict[str, Any]]) -> None:
        """Set the migration gauges from the published flows (``P:flows`` fields ``week``,
        ``month``, ``week:closed``, ``month:closed``, ``week:effective``, ``month:effective``:
        windows ``week``, ``month``, ``last_week``, ``last_month``, ``settled_week``,
        ``settled_month``); suppressed figures are removed."""
        pairs = [(self.net_migration, "net"), (self.net_migration_lo, "net_lo"),
                 (self.net_migration_hi, "net_hi"), (self.net_per_1000_lo, "net_per_1000_lo"),
                 (self.net_per_1000_hi, "net_per_1000_hi")]
        for field, doc in flows.items():
            kind, _, which = field.partition(":")
            window = {"": kind, "closed": f"last_{kind}", "effective": f"settled_{kind}"}[which]
            for rid, fig in doc["regions"].items():
                for gauge, key in pairs:
                    if fig.get(key) is None:
                        gauge.remove(rid, window)
                    else:
                        gauge.labels(rid, window).set(fig[key])
            balance = doc["rural"]["balance"]
            if balance is None:
                self.rural_balance.remove(window)
            else:
                self.rural_balance.labels(window).set(balance)

    def show_foreign(self, docs: dict[str, dict[str, Any]]) -> None:
        """Set the foreign-SIM gauges from the published documents (``P:foreign`` fields
        ``week``, ``month``, ``week:closed``, ``month:closed``, ``week:settled``,
        ``month:settled``: windows ``week``, ``month``, ``last_week``, ``last_month``,
        ``settled_week``, ``settled_month``). Stock and usual residents come from the open
        week (the latest night). Country labels are the documents' own (at most the top
        countries, ``other`` and ``all``: a small label set; fix it with a country list); series
        no longer published (suppressed, or a country that left the top) are removed."""
        arrivals: dict[tuple[str, str], int | None] = {}
        for field, doc in docs.items():
            kind, _, which = field.partition(":")
            window = {"": kind, "closed": f"last_{kind}", "settled": f"settled_{kind}"}[which]
            for country, line in doc["totals"].items():
                arrivals[(window, _country(country))] = line["arrivals"]["devices"]
        stock: dict[tuple[str, str], int | None] = {}
        residents: dict[str, int | None] = {}
        now = docs.get("week")
        if now is not None:
            for country, line in now["totals"].items():
                stock[(_country(country), "all")] = line["stock"]["devices"]
                for cls, fig in line["by_class"]["stock"].items():
                    stock[(_country(country), cls)] = fig["devices"]
            residents = {rid: r["usual_resident"]["devices"] for rid, r in now["regions"].items()}
        for gauge, values in ((self.foreign_arrivals, arrivals), (self.foreign_stock, stock)):
            _set_series(gauge, values)
        _set_series(self.foreign_usual_residents, {(rid,): v for rid, v in residents.items()})

    def show_snapshot(self, snap: dict[str, Any], published_unix_s: float) -> None:
        """Set the per-region gauges from a published snapshot (suppressed figures are removed)."""
        pairs = [(self.present, "present"), (self.resident, "resident"),
                 (self.resident_lo, "resident_lo"), (self.resident_hi, "resident_hi"),
                 (self.registered, "registered"), (self.gap_ratio, "gap_ratio"),
                 (self.gap_ratio_lo, "gap_ratio_lo"), (self.gap_ratio_hi, "gap_ratio_hi")]
        for rid, fig in snap["regions"].items():
            for gauge, key in pairs:
                if fig.get(key) is None:
                    gauge.remove(rid)  # a no-op when absent (prometheus-client 0.26)
                else:
                    gauge.labels(rid).set(fig[key])
        self.show_warm_up(snap)
        self.last_publish.set(published_unix_s)

    def show_warm_up(self, snap: dict[str, Any]) -> None:
        """Set ``defacto_warming_up`` and its seconds left from a snapshot's ``warming_up``
        (a snapshot without it, of an earlier version, counts as warm)."""
        warm = snap.get("warming_up") or {}
        at_ms = parse_iso_ms(snap["at"]) if "at" in snap else None
        for figure in ("present", "resident"):
            self.warming_up.labels(figure).set(1 if warm.get(figure) else 0)
            ready = warm.get(f"{figure}_ready_at")
            if not warm.get(figure):
                self.warming_up_left.labels(figure).set(0)
            elif ready is None or at_ms is None:
                self.warming_up_left.remove(figure)
            else:
                self.warming_up_left.labels(figure).set(
                    max(parse_iso_ms(ready) - at_ms, 0) / SECOND_MS)

    def forget_partition(self, partition: int) -> None:
        """Drop a revoked partition's lag gauge (its next owner reports it)."""
        self.lag.remove(str(partition))

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


def _country(code: str) -> str:
    """A country label: the ISO code, ``other``, or ``all`` for ``*``."""
    return "all" if code == "*" else code


def _set_series(gauge: Gauge, values: dict[tuple[str, ...], int | None]) -> None:
    """Make ``gauge``'s series exactly the non-null ``values`` (others removed)."""
    keep = {k: v for k, v in values.items() if v is not None}
    for labels in [tuple(s.labels.values()) for m in gauge.collect() for s in m.samples]:
        if labels not in keep:
            gauge.remove(*labels)
    for labels, v in keep.items():
        gauge.labels(*labels).set(v)
