"""Who is asking and what they may do: users, browser logins, API tokens, roles, the audit log.

- :mod:`~fleet.accounts.actor`: the :class:`Actor` behind a request or command, and its checks
- :mod:`~fleet.accounts.roles`: roles by name, and the lower of two
- :mod:`~fleet.accounts.passwords`: what a password must be; argon2id hashing and checking
- :mod:`~fleet.accounts.credentials`: secrets shown once and stored as their SHA-256
- :mod:`~fleet.accounts.users`: creating users, changing roles, disabling and enabling
- :mod:`~fleet.accounts.logins`: browser login sessions
- :mod:`~fleet.accounts.login_throttle`: slowing down password guessing
- :mod:`~fleet.accounts.tokens`: API tokens
- :mod:`~fleet.accounts.audit`: who changed what

Their errors are in :mod:`fleet.errors` (``AuthError`` and below).
"""
