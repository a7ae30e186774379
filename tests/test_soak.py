"""The soak benchmark (benchmarks/soak.py) for half a minute with three people: the real server with
accounts on and the scripted model, every action of the mix, and the check of the database and
the page against the people's ledgers. The full run (20 people, 10 minutes, SQLite and
PostgreSQL) is a benchmark; this keeps it working and its checks honest."""

from __future__ import annotations

from benchmarks.soak import soak


def test_half_a_minute_of_three_people_loses_and_leaks_nothing():
    result = soak(minutes=0.5, clients=3, kind="sqlite", seed=1)
    assert result["requests"] > 30 and result["answers"]["done"] > 10, result
    assert result["stories"] >= 3 and result["exports"] >= 1, result
    assert "client fault" not in result["answers"] and result["unanswered"] == [], result
    for nothing in ("stories_lost", "stories_unaccounted", "step_counts_off", "manuscripts_off",
                    "paragraphs_without_memory", "notes_lost_or_doubled", "seen_across_accounts"):
        assert result[nothing] == [], (nothing, result[nothing])
    assert result["export_mismatches"] == 0 and result["stale_edits_that_went_through"] == 0
    # the mix reached the refusals it is meant to: others' ids, bad input
    assert any(kind.startswith("refused: no story with id") for kind in result["answers"]), result["answers"]
