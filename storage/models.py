"""The data: Story, Step (a tree) and MemoryEntry. The database is the single source of truth."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Story(Base):
    __tablename__ = "story"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    premise: Mapped[str] = mapped_column(Text)
    outline: Mapped[str] = mapped_column(Text, default="")
    genre: Mapped[str] = mapped_column(String(100), default="")
    language: Mapped[str] = mapped_column(String(20), default="en")
    owner: Mapped[str | None] = mapped_column(String(200), default=None)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    head_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("step.id", use_alter=True, name="fk_story_head_step", ondelete="SET NULL"),
        default=None,
    )
    # Renewed (a random token) in the same transaction as any change to this story's long-term
    # memory, so an in-memory vector index can tell whether it is still in step with the database.
    memory_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    head: Mapped[Step | None] = relationship(foreign_keys=[head_step_id], post_update=True)


class Step(Base):
    __tablename__ = "step"

    id: Mapped[int] = mapped_column(primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("story.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"), default=None)
    depth: Mapped[int] = mapped_column(Integer, default=0)  # 0 for the opening paragraph
    plan: Mapped[str] = mapped_column(Text, default="")  # the plan or instruction this step followed
    paragraph: Mapped[str] = mapped_column(Text)
    short_memory: Mapped[str] = mapped_column(Text)  # the short-term memory after this step
    plans: Mapped[list] = mapped_column(JSON, default=list)  # the three plans it proposed
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    model: Mapped[str] = mapped_column(String(500), default="")
    trace: Mapped[dict] = mapped_column(JSON, default=dict)  # prompts sent and raw outputs
    chapter: Mapped[str | None] = mapped_column(String(500), default=None)  # a chapter starts here
    label: Mapped[str | None] = mapped_column(String(200), default=None)  # the name of the branch from here
    # Set on scenes written in a reader's playthrough; the writer's manuscript never includes them.
    playthrough_id: Mapped[int | None] = mapped_column(
        ForeignKey("playthrough.id", ondelete="CASCADE", use_alter=True, name="fk_step_playthrough"),
        default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Playthrough(Base):
    """A reader playing a story as interactive fiction: its own branch from the writer's scene."""

    __tablename__ = "playthrough"

    id: Mapped[int] = mapped_column(primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("story.id", ondelete="CASCADE"), index=True)
    reader: Mapped[str] = mapped_column(String(200), default="reader")
    start_step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"))
    head_step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"))
    choices: Mapped[list] = mapped_column(JSON, default=list)  # offered at the head scene
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MemoryEntry(Base):
    __tablename__ = "memory_entry"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused: the index is keyed by them

    id: Mapped[int] = mapped_column(primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("story.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"), default=None, index=True)
    kind: Mapped[str] = mapped_column(String(20))  # paragraph, summary, lore, note
    text: Mapped[str] = mapped_column(Text)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)
    keys: Mapped[list] = mapped_column(JSON, default=list)  # trigger keys for lore
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, normalized
    revision: Mapped[int] = mapped_column(Integer, default=0)  # bumped when text and vector change
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_retrieved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


MEMORY_KINDS = ("paragraph", "summary", "lore", "note")


class User(Base):
    """A person who logs in when authentication is on; their stories have `Story.owner` = name."""

    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))  # storage.accounts: scrypt, salted
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginSession(Base):
    """A logged-in browser or client: the SHA-256 of its cookie's random token (the token itself is
    never stored), until when it holds. A password change deletes the user's sessions."""

    __tablename__ = "login_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LoginThrottle(Base):
    """Failed logins in a row from one address: for one name (`name`), or for any name (`name` ""),
    and until when that pair is refused without a check."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("address", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
