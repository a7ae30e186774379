"""The Gradio page: its frame (app/ui/frame.py) and one module per tab. Only app/ imports gradio."""

from app.ui.frame import build_app, serve

__all__ = ["build_app", "serve"]
