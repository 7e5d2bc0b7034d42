"""Who speaks: folder, CSV and RTTM sources, hostile lines, and order-free speaker statistics."""

import json
from pathlib import Path

import numpy as np
import pytest

from ser.batch.records import location_from_cell
from ser.batch.speaker_stats import Item, SpeakerStats, enough, speaker_statistics
from ser.batch.speakers import (
    FolderSpeakers,
    RttmSpeakers,
    TableSpeakers,
    load_speakers,
    summarise_problems,
)
from ser.errors import SerError


def test_the_parent_folder_names_the_speaker_however_the_path_is_spelled(tmp_path, monkeypatch):
    source = FolderSpeakers()
    assert source.assign(Path("/data/Actor_07/03-01-05.flac")).speaker == "Actor_07"
    (tmp_path / "Actor_03").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "Actor_03")
    monkeypatch.chdir(tmp_path / "Actor_03")
    assert source.assign(Path("clip.wav")).speaker == "Actor_03"  # scored as `score .`
    assert source.assign(Path("../link/clip.wav")).speaker == "Actor_03"
    assert source.assign(Path("s3://bucket/agent-2/call.wav")).speaker == "agent-2"
    assert source.assign(Path("/clip.wav")).speaker is None  # no folder: the reason says so
    assert "parent folder" in source.assign(Path("/clip.wav")).reason


def test_object_uris_match_as_written_from_the_report_cells_that_name_them(tmp_path):
    table = tmp_path / "speakers.csv"
    table.write_text("path,speaker\ns3://bucket/calls/a.wav,agent-1\n")
    source = TableSpeakers.read(table)
    cells = ["s3://bucket/calls/a.wav", "s3://bucket/calls/b.wav"]  # as the report writes them
    assert source.assign(location_from_cell(cells[0])).speaker == "agent-1"
    assert source.assign(location_from_cell(cells[1])).speaker is None
    assert source.unused(location_from_cell(cell) for cell in cells) == []
    assert source.unused([location_from_cell(cells[1])]) == ["s3://bucket/calls/a.wav"]
    assert FolderSpeakers().assign(location_from_cell(cells[0])).speaker == "calls"


def test_a_csv_table_survives_hostile_lines_and_matches_paths_from_its_folder(
    tmp_path, monkeypatch
):
    table = tmp_path / "speakers.csv"
    table.write_text(
        "\ufeffPath , Speaker\n"  # a BOM and loose header spacing, as spreadsheets write
        "calls/a.wav,agent-1\n"
        "calls/b.wav,\n"  # no speaker
        ",agent-2\n"  # no path
        "calls/c.wav,agent-2,extra\n"  # an extra cell is ignored
        "calls/a.wav,agent-9\n"  # a second, different speaker: the first is kept
        '"calls/d,e.wav","customer ""x"""\n'  # quoting
        "\x00\xff broken\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    speakers = TableSpeakers.read(table)
    assert speakers.assign(Path("calls/a.wav")).speaker == "agent-1"
    assert speakers.assign(tmp_path / "calls" / "c.wav").speaker == "agent-2"
    assert speakers.assign(Path("calls/d,e.wav")).speaker == 'customer "x"'
    missing = speakers.assign(Path("calls/b.wav"))
    assert missing.speaker is None and "speakers.csv" in missing.reason
    lines = [problem.split(": ", 1)[0] for problem in speakers.problems]
    assert lines == [f"{table}:3", f"{table}:4", f"{table}:6", f"{table}:8"]
    assert "two speakers (agent-1, agent-9)" in speakers.problems[2]
    assert speakers.unused([tmp_path / "calls" / "a.wav"]) == sorted(
        str(tmp_path / "calls" / name) for name in ("c.wav", "d,e.wav")
    )


@pytest.mark.parametrize("text", ["", "file,who\na.wav,x\n"])
def test_a_table_without_path_and_speaker_columns_is_one_clear_error(tmp_path, text):
    table = tmp_path / "s.csv"
    table.write_text(text)
    with pytest.raises(SerError, match="path and speaker columns"):
        TableSpeakers.read(table)


def test_rttm_turns_assign_each_range_to_whoever_covers_most_of_it(tmp_path):
    rttm = tmp_path / "calls.rttm"
    rttm.write_text(
        ";; a comment\n"
        "SPKR-INFO call1 1 <NA> <NA> <NA> unknown agent <NA> <NA>\n"  # another record type
        "SPEAKER call1 1 0.00 5.00 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call1 1 5.00 4.00 <NA> <NA> customer <NA> <NA>\n"
        "SPEAKER call1 1 12.5 2.5 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call1 1 4.50 1.00 <NA> <NA> customer <NA> <NA>\n"  # overlaps the agent
        "SPEAKER call1 1 abc 1.0 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call1 1 1.0 -2 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call1 1 nan 1 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call1 1 1.0\n"
        "SPEAKER call2 1 0 3 <NA> <NA> solo <NA> <NA>\n"
    )
    speakers = RttmSpeakers.read(rttm)
    assign = speakers.assign
    assert assign(Path("/x/call1.wav"), 0.0, 4.0).speaker == "agent"
    assert assign(Path("/x/call1.wav"), 4.0, 8.0).speaker == "customer"  # 1 s agent, 3.5 s
    assert assign(Path("/x/call1.wav"), 11.0, 15.0).speaker == "agent"
    gap = assign(Path("/x/call1.wav"), 9.5, 12.0)
    assert gap.speaker is None and "9.50-12.00" in gap.reason
    assert assign(Path("call2.flac"), 0.0, 1.0).speaker == "solo"
    assert assign(Path("call3.wav"), 0.0, 1.0).speaker is None
    numbers = sorted(int(p.split(":")[1]) for p in speakers.problems[:4])
    assert numbers == [7, 8, 9, 10]
    repeat, overlap = speakers.problems[4:]
    assert "call1: 1 turns repeat time their own speaker already holds; merged" in repeat
    assert "agent and customer overlap at 4.50-5.00 s" in overlap
    assert summarise_problems(speakers.problems).startswith("6 problems with who speaks: ")


def test_a_repeated_rttm_turn_counts_once(tmp_path):
    rttm = tmp_path / "call.rttm"
    rttm.write_text(
        "SPEAKER call 1 0.0 2.2 <NA> <NA> agent <NA> <NA>\n"
        "SPEAKER call 1 0.0 2.2 <NA> <NA> agent <NA> <NA>\n"  # the same line twice
        "SPEAKER call 1 2.2 1.8 <NA> <NA> customer <NA> <NA>\n"
    )
    speakers = RttmSpeakers.read(rttm)
    assert speakers.assign(Path("call.wav"), 0.0, 4.0).speaker == "agent"  # 2.2 s against 1.8 s
    assert [(t.start_s, t.end_s) for t in speakers.turns["call"]] == [(0.0, 2.2), (2.2, 4.0)]


def test_a_tie_goes_to_the_first_name_so_order_never_matters(tmp_path):
    a = "SPEAKER f 1 0 2 <NA> <NA> b <NA> <NA>\nSPEAKER f 1 2 2 <NA> <NA> a <NA> <NA>\n"
    b = "".join(reversed(a.splitlines(keepends=True)))
    for text in (a, b):
        (tmp_path / "t.rttm").write_text(text)
        assert RttmSpeakers.read(tmp_path / "t.rttm").assign(Path("f.wav"), 1, 3).speaker == "a"


def test_load_speakers_picks_the_source_and_refuses_both(tmp_path):
    (tmp_path / "s.rttm").write_text("")
    (tmp_path / "s.csv").write_text("path,speaker\n")
    assert load_speakers(None, None) is None
    assert isinstance(load_speakers("folder", None), FolderSpeakers)
    assert isinstance(load_speakers(None, tmp_path / "s.rttm"), RttmSpeakers)
    assert isinstance(load_speakers(None, tmp_path / "s.csv"), TableSpeakers)
    with pytest.raises(SerError, match="not both"):
        load_speakers("folder", tmp_path / "s.csv")
    with pytest.raises(SerError, match="cannot read"):
        load_speakers(None, tmp_path / "missing.csv")


def _items(rng: np.random.Generator) -> tuple[list[Item], list[np.ndarray]]:
    """40 items of 3 speakers, and each item's valid frames ``[frames, members, dim]``."""
    items, frames = [], []
    for n in range(40):
        speaker = f"s{n % 3}"
        own = rng.normal(loc=n % 3, size=(int(rng.integers(1, 9)), 2, 4))
        items.append(Item((f"/a/f{n:02d}.wav", n % 5), speaker, own.sum(axis=0), len(own),
                          1.0 + n % 4))  # fmt: skip
        frames.append(own)
    return items, frames


def test_speaker_statistics_equal_a_numpy_reference_and_ignore_order():
    items, frames = _items(np.random.default_rng(0))
    stats = speaker_statistics(items)
    for speaker in ("s0", "s1", "s2"):
        mine = np.concatenate(
            [f for i, f in zip(items, frames, strict=True) if i.speaker == speaker]
        )
        np.testing.assert_allclose(stats[speaker].mean, mine.mean(axis=0), rtol=0, atol=1e-12)
        assert stats[speaker].items == sum(i.speaker == speaker for i in items)
    for seed in range(5):  # any order: the same bits
        shuffled = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
        again = speaker_statistics(shuffled)
        for speaker, value in stats.items():
            assert np.array_equal(again[speaker].mean, value.mean)


def test_speakers_below_the_minimum_are_left_to_the_plain_head():
    items, _ = _items(np.random.default_rng(1))
    stats = speaker_statistics(items)
    assert {s for s, v in stats.items() if enough(v, 14, 0.0)} == {"s0"}  # 14, 13, 13 items
    seconds = {s: v.seconds for s, v in stats.items()}
    least = min(seconds.values())
    kept = {s for s, v in stats.items() if enough(v, 1, least + 0.5)}
    assert kept == {s for s, v in seconds.items() if v >= least + 0.5}


def test_statistics_survive_their_json_file():
    items, _ = _items(np.random.default_rng(2))
    stats = speaker_statistics(items)
    again = {
        s: SpeakerStats.from_json(json.loads(json.dumps(v.to_json()))) for s, v in stats.items()
    }
    for speaker, value in stats.items():
        assert np.array_equal(again[speaker].mean, value.mean)
        assert again[speaker].items == value.items


def test_a_table_named_by_a_relative_path_matches_and_keeps_bytes_apart(tmp_path, monkeypatch):
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "speakers.csv").write_bytes(
        b"path,speaker\na.wav,Jos\xe9\nb.wav,Jos\xe8\n"  # Latin-1, not UTF-8: two names
    )
    monkeypatch.chdir(tmp_path)
    speakers = TableSpeakers.read(Path("calls/speakers.csv"))
    first = speakers.assign(Path("calls/a.wav")).speaker
    second = speakers.assign(tmp_path / "calls" / "b.wav").speaker
    assert first and second and first != second
    assert speakers.unused([Path("calls/a.wav"), Path("calls/b.wav")]) == []


def test_an_unreadable_csv_is_one_line_naming_where(tmp_path):
    table = tmp_path / "s.csv"
    table.write_text("path,speaker\na.wav," + "x" * 200_000 + "\n")
    with pytest.raises(SerError, match=r"s\.csv:2: unreadable CSV"):
        TableSpeakers.read(table)
