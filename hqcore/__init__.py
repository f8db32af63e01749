"""The ground floor every hqstream process stands on: not a data format, not a service.

Settings (the ``HQ_`` environment, :mod:`hqcore.settings`), logging set-up
(:mod:`hqcore.logs`), Kafka client options built from the settings
(:mod:`hqcore.kafka_client`), process tuning (:mod:`hqcore.tuning`), the
``/metrics`` + ``/healthz`` + ``/readyz`` endpoints (:mod:`hqcore.probe_server`)
stop-on-signal handling (:mod:`hqcore.signals`), and the Parquet archive's
files, which the archiver writes and the gateway reads too
(:mod:`hqcore.parquet_archive`).

Every package may import it; it imports only :mod:`schemas` and third-party
libraries, never a service (producers, streams, api, archive) or hqstream.
"""
