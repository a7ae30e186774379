"""The composition root: configuration, the story service, the CLI and the Gradio UI."""
