"""Telemetry history at scale: samples partitioned by day on PostgreSQL (:mod:`.partitions`),
per-minute and per-hour rollups that long history queries read (:mod:`.rollups`), retention
per resolution (:mod:`.retention`), and the job that keeps all three going (:mod:`.jobs`)."""
