"""Kept for tests/conftest.py until it imports app.service (the lead changes it): the manuscripts
use case of a service, by its old name."""

from __future__ import annotations

from app.service import StoryService
from app.service.manuscripts import Manuscripts as _Manuscripts


def Manuscripts(service: StoryService) -> _Manuscripts:  # noqa: N802 (the old class's name)
    return service.manuscripts
