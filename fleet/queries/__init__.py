"""The read side of the fleet API: each module turns a question (overview, one site, a
history plot, the alarm list) into a few set-based SQL queries and pydantic views, so the
answer takes the same handful of round trips for 10 gateways or 1000."""
