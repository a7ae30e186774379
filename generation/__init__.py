"""Backends, the recurrence loop, prompts and parsers. Never imports gradio."""
