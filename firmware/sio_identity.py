"""The board's identity file, written when the board is provisioned and read at boot.

It binds the board to one site and gateway and gives its Modbus unit id. It holds only the
SHA-256 of the provisioning token, never the token. Format, one ``key = value`` a line,
``#`` starts a comment, every key required, unknown keys rejected::

    site = hil
    gateway = gw-hil
    unit_id = 1
    token_sha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""

try:
    import uhashlib as hashlib
except ImportError:
    import hashlib

KEYS = ("site", "gateway", "unit_id", "token_sha256")


class IdentityError(ValueError):
    """The identity file is missing a key, has an unknown one, or a bad value."""


class Identity:
    def __init__(self, site, gateway, unit_id, token_sha256):
        if not site or not gateway:
            raise IdentityError("site and gateway must not be empty")
        if unit_id < 1 or unit_id > 247:
            raise IdentityError("unit_id: %d is outside 1..247" % unit_id)
        if len(token_sha256) != 64 or not _is_hex(token_sha256):
            raise IdentityError("token_sha256: expected 64 hex digits")
        self.site = site
        self.gateway = gateway
        self.unit_id = unit_id
        self.token_sha256 = token_sha256.lower()

    def token_matches(self, token):
        """True when ``token`` (bytes or str) is the provisioning token of this board."""
        return hash_token(token) == self.token_sha256

    def render(self):
        """The file text of this identity (what :func:`parse` reads back)."""
        return "site = %s\ngateway = %s\nunit_id = %d\ntoken_sha256 = %s\n" % (
            self.site,
            self.gateway,
            self.unit_id,
            self.token_sha256,
        )


def hash_token(token):
    """Lower-case hex SHA-256 of ``token`` (MicroPython's hashlib has no hexdigest)."""
    if isinstance(token, str):
        token = token.encode()
    return "".join("%02x" % b for b in hashlib.sha256(token).digest())


def parse(text):
    """An :class:`Identity` from the file text; :class:`IdentityError` names the bad line."""
    values = {}
    lineno = 0
    for line in text.split("\n"):
        lineno += 1
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        eq = line.find("=")
        key = line[:eq].strip()
        value = line[eq + 1 :]
        if eq < 0 or key not in KEYS:
            raise IdentityError("line %d: expected one of %s = value" % (lineno, ", ".join(KEYS)))
        if key in values:
            raise IdentityError("line %d: %s given twice" % (lineno, key))
        values[key] = value.strip()
    for key in KEYS:
        if key not in values:
            raise IdentityError("%s is missing" % key)
    try:
        unit_id = int(values["unit_id"])
    except ValueError:
        raise IdentityError("unit_id: %r is not a number" % values["unit_id"])
    return Identity(values["site"], values["gateway"], unit_id, values["token_sha256"])


def load(path):
    """Read and parse the identity file at ``path`` (OSError if it is missing)."""
    with open(path) as f:
        return parse(f.read())


def _is_hex(text):
    for ch in text:
        if ch not in "0123456789abcdefABCDEF":
            return False
    return True
