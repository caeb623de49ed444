"""Signed release bundles, their storage and the OTA commands and status of each gateway."""
