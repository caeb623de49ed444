"""Over-the-air updates of the gateway and its SIO-1 (issue 15; for people: docs/updates.md).

``bundle`` reads and writes signed release bundles; ``download`` fetches one with resume;
``slots`` builds and switches the A/B virtual environments; ``state`` is the persisted
update state the launcher and the agent share; ``launcher`` picks the slot to start and
counts failed starts; ``agent`` drives an update from an ``ota/command`` to a commit or a
rollback and reports it on ``ota/status``.
"""
