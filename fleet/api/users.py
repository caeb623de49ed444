"""Users (admin only): list them, create one with a role and a password, change a role,
disable (which ends their sessions and revokes their tokens at once) or enable one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from fleet.accounts import audit
from fleet.accounts.actor import Actor
from fleet.accounts.passwords import MAX_PASSWORD
from fleet.accounts.users import create_user, update_user
from fleet.api.deps import SessionDep, role
from fleet.models import Role, User

router = APIRouter(tags=["users"])


class UserView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    role: Role
    disabled: bool
    created_at: datetime


class NewUser(BaseModel):
    name: str = Field(max_length=64)
    role: Role
    password: str = Field(max_length=MAX_PASSWORD, description="at least 12 characters")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Field(
        default=None, description="true ends their login sessions and revokes their API tokens"
    )

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if self.role is None and self.disabled is None:
            raise ValueError("expected at least one of role, disabled")
        return self


Admin = Annotated[Actor, role(Role.ADMIN, "changing users")]


@router.get("/users")
async def list_users(
    _actor: Annotated[Actor, role(Role.ADMIN, "listing users")], session: SessionDep
) -> list[UserView]:
    rows = await session.scalars(select(User).order_by(User.name))
    return [UserView.model_validate(u) for u in rows]


@router.post("/users", status_code=201)
async def add_user(
    new: NewUser,
    actor: Annotated[Actor, role(Role.ADMIN, "creating users")],
    session: SessionDep,
) -> UserView:
    user = await create_user(session, new.name, new.role, new.password)
    audit.record(session, actor.label, "user.create", f"user:{user.name}", {"role": user.role})
    await session.commit()
    return UserView.model_validate(user)


@router.patch(
    "/users/{name}",
    responses={404: {"description": "no such user"}, 409: {"description": "the last admin"}},
)
async def change_user(name: str, change: UserUpdate, actor: Admin, session: SessionDep) -> UserView:
    """Change a user's role or disable/enable them; takes effect on their next request.
    Refused (409) when it would leave no enabled admin."""
    done = await update_user(session, name, change.role, change.disabled)
    if done.changed:
        audit.record(session, actor.label, "user.update", f"user:{name}", done.detail())
    await session.commit()
    return UserView.model_validate(done.user)
