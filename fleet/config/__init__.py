"""Desired configuration: versions per gateway, bulk changes, delivery and reported state."""
