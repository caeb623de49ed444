"""Gateway tags: what bulk changes select gateways by ("pilot", "north")."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.accounts import audit
from fleet.config.tables import GatewayTag
from fleet.config.versions import find_gateway
from fleet.errors import ConfigRefused


async def set_tags(
    session: AsyncSession, site: str, gateway: str, tags: list[str], author: str
) -> list[str]:
    """Replace a gateway's tags (caller commits); audited."""
    gw = await find_gateway(session, site, gateway)
    clean = sorted({t.strip() for t in tags if t.strip()})
    for tag in clean:
        if len(tag) > 48:
            raise ConfigRefused("tags", [f"tags: {tag[:20]!r}…: at most 48 characters"])
    await session.execute(delete(GatewayTag).where(GatewayTag.gateway_id == gw.id))
    session.add_all(GatewayTag(gateway_id=gw.id, tag=t) for t in clean)
    audit.record(session, author, "config.tags", f"gateway:{site}/{gateway}", {"tags": clean})
    return clean
