"""Users (admin only): list them, create one with a role and a password."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from fleet import audit
from fleet.api.deps import SessionDep, role
from fleet.auth import MAX_PASSWORD, Actor, create_user
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
