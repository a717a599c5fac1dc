"""The backend side of the wire: what runs on the ingestion host, never on the device.

`ingest` (MQTT subscriber, workers), `reassembly` (chunks → messages, bounded, on disk), `sink`
(session folders, dedupe, exactly-once) and `report` (the session's report.html). Device-side code
(`uplink.stage`, `uplink.spool`, `uplink.sender`) never imports this package; both sides share
`uplink.wire` and `uplink.messages`, the contract in docs/wire-format.md.
"""
