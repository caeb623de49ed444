"""API tokens for scripts: any logged-in user makes them for themselves, with a role at
most their own; the secret is in the answer once and never again. Making and revoking
tokens needs a browser login: a token cannot mint or revoke tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from fleet.accounts import audit
from fleet.accounts.tokens import DEFAULT_TOKEN_LIFETIME, create_token, revoke_token
from fleet.api.deps import ActorDep, LoggedInActorDep, RowId, SessionDep
from fleet.models import ApiToken, Role, User

router = APIRouter(tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    expires_in_days: int | None = Field(
        default=DEFAULT_TOKEN_LIFETIME.days,
        ge=1,
        le=3650,
        description="refused after this many days; null: never expires",
    )


class IssuedToken(BaseModel):
    id: int
    name: str
    role: Role
    token: str = Field(description="the secret: shown this once, only its SHA-256 is kept")
    expires_at: datetime | None


class TokenView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None


@router.get("/tokens")
async def list_tokens(actor: ActorDep, session: SessionDep) -> list[TokenView]:
    """The actor's own tokens, revoked ones too."""
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.user_id == actor.user_id).order_by(ApiToken.id)
    )
    return [TokenView.model_validate(t) for t in rows]


@router.post("/tokens", status_code=201)
async def add_token(new: NewToken, actor: LoggedInActorDep, session: SessionDep) -> IssuedToken:
    owner = await session.get(User, actor.user_id)
    if owner is None:
        raise HTTPException(401, "not logged in")
    lifetime = None if new.expires_in_days is None else timedelta(days=new.expires_in_days)
    token, secret = await create_token(session, actor, owner, new.name, new.role, lifetime)
    audit.record(
        session, actor.label, "token.create", f"token:{token.id}",
        {"name": token.name, "role": token.role, "owner": owner.name,
         "expires_at": None if token.expires_at is None else token.expires_at.isoformat()},
    )  # fmt: skip
    await session.commit()
    return IssuedToken(
        id=token.id, name=token.name, role=Role(token.role), token=secret,
        expires_at=token.expires_at,
    )  # fmt: skip


@router.delete("/tokens/{token_id}", status_code=204)
async def delete_token(token_id: RowId, actor: LoggedInActorDep, session: SessionDep) -> None:
    """Revoke a token of one's own (an admin: anyone's); it is refused from then on."""
    if await revoke_token(session, actor, token_id):
        audit.record(session, actor.label, "token.revoke", f"token:{token_id}")
        await session.commit()
