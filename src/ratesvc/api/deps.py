"""FastAPI dependencies: Annotated aliases reading what create_app put on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ratesvc.api.mirror import RateMirror
from ratesvc.settings import Settings


def get_settings(request: Request) -> Settings:
    """The Settings this app was built with."""
    return request.app.state.settings


def get_mirror(request: Request) -> RateMirror:
    """This worker's snapshot."""
    return request.app.state.mirror


SettingsDep = Annotated[Settings, Depends(get_settings)]
MirrorDep = Annotated[RateMirror, Depends(get_mirror)]
