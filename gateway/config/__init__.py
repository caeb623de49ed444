"""Desired configuration on the gateway: receive a site document from the fleet, validate it,
apply it in place, watch the health window, then commit it or roll back, and report."""
