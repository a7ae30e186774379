"""What `storyloom serve` leaves on disk: the data folder and the database are their owner's only,
Gradio's copies of uploads and exports are too, and they are deleted once STORYLOOM_FILES_TTL
has passed. The real server, accounts off, no model call."""

from __future__ import annotations

import stat
import time

from gradio_client import Client

from tests.conftest import running_app, storyloom_env
from tests.test_web_accounts import import_backup


SHIPPED = {"repetition.png"}  # Gradio's copy of the shipped adapter's chart (assets/), public: it keeps its mode


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def made(folder) -> list:
    """The files the server made in `folder` for the people it serves. (Gradio's upload parser
    also leaves one empty file per upload at the cache's root: it holds nothing, and it is 0600.)"""
    return [p for p in folder.rglob("*") if p.is_file() and p.name not in SHIPPED and p.stat().st_size]


def test_files_are_their_owners_only_and_exports_and_uploads_expire(tmp_path, story_backup):
    data, cache, temp = tmp_path / "data", tmp_path / "gradio", tmp_path / "tmp"
    temp.mkdir()
    env = {**storyloom_env(data, files_ttl="3"), "GRADIO_TEMP_DIR": str(cache), "TMPDIR": str(temp)}
    with running_app(env, tmp_path / "serve.log") as url:
        me = Client(url, verbose=False)
        import_backup(me, story_backup)  # an upload: Gradio keeps a copy
        download, _, status = me.predict("json", True, api_name="/export")
        assert "ready to download" in status, status
        kept = [p for p in (*cache.rglob("*"), *temp.rglob("*")) if p.name not in SHIPPED]
        files = [p for p in kept if p.is_file()]
        assert any(p.suffix == ".json" and "storyloom-exports" in str(p) for p in files), kept  # ours
        assert any(p.suffix == ".json" for p in made(cache)), kept  # Gradio's copy of the export
        assert all(mode(p) == 0o600 for p in files), {str(p): oct(mode(p)) for p in files}
        assert all(mode(p) == 0o700 for p in kept if p.is_dir()), {str(p): oct(mode(p)) for p in kept if p.is_dir()}
        assert mode(data) == 0o700 and mode(data / "storyloom.db") == 0o600
        deadline = time.monotonic() + 20
        while made(cache) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not made(cache)  # deleted after 3 s
