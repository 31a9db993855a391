"""Exercise protocols: the shipped TOML, the schema checks, the clock-driven runner."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from realtime.errors import BadInputError
from realtime.session.protocol import (
    PHASE_DONE,
    PHASE_HOLD,
    PHASE_PREPARE,
    PHASE_REST,
    PHASE_WAITING,
    ProtocolRunner,
    available_protocols,
    build_timeline,
    load_protocol,
    parse_protocol,
)

PALSY_IDS = ["rest", "brow_raise", "eye_closure_gentle", "eye_closure_tight", "nose_wrinkle", "smile_closed",
             "smile_open", "pucker", "ee", "cheek_puff", "lower_lip_depression"]


def test_shipped_palsy_basic_has_the_issue_exercises() -> None:
    assert "palsy-basic" in available_protocols()
    p = load_protocol("palsy-basic")
    assert [e.id for e in p.exercises] == PALSY_IDS
    assert all(e.prompt for e in p.exercises)
    # the defaults apply to exercises that do not override them
    brow = p.exercise("brow_raise")
    assert (brow.repetitions, brow.prepare_s, brow.hold_s, brow.rest_s) == (3, 3.0, 3.0, 3.0)
    rest = p.exercise("rest")
    assert (rest.repetitions, rest.hold_s, rest.rest_s) == (1, 8.0, 0.0)
    assert p.duration_s == pytest.approx(sum(e.prepare_s + e.repetitions * (e.hold_s + e.rest_s)
                                             for e in p.exercises))


def test_timeline_is_contiguous_and_ordered() -> None:
    p = load_protocol("palsy-basic")
    segs = build_timeline(p)
    assert segs[0].start_s == 0.0
    assert segs[-1].end_s == pytest.approx(p.duration_s)
    for a, b in itertools.pairwise(segs):
        assert a.end_s == pytest.approx(b.start_s)
        assert a.end_s > a.start_s
    holds = [s for s in segs if s.phase == PHASE_HOLD]
    assert len(holds) == sum(e.repetitions for e in p.exercises)
    assert not any(s.phase == PHASE_REST and s.exercise_id == "rest" for s in segs)  # rest_s = 0 left out


def test_runner_labels_and_countdown() -> None:
    p = load_protocol("palsy-basic")
    r = ProtocolRunner(p)
    assert r.prompt_at(-0.5).phase == PHASE_WAITING
    s = r.prompt_at(0.2)
    assert (s.phase, s.exercise_id, s.countdown) == (PHASE_PREPARE, "rest", 3)
    # rest: prepare 3 s + hold 8 s; brow_raise then starts at 11 s with prepare 3 s, hold rep 1 at 14 s
    s = r.prompt_at(14.5)
    got = (s.exercise_id, s.phase, s.repetition, s.repetitions, s.countdown)
    assert got == ("brow_raise", PHASE_HOLD, 1, 3, 3)
    assert "Raise both eyebrows" in s.text()
    s = r.prompt_at(17.2)
    assert (s.phase, s.repetition, s.countdown) == (PHASE_REST, 1, 3)
    assert "Relax" in s.text()
    assert r.prompt_at(p.duration_s + 0.1).phase == PHASE_DONE
    assert r.prompt_at(p.duration_s + 0.1).done
    progress = [r.prompt_at(t).progress for t in (0.0, 50.0, 100.0, p.duration_s)]
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_user_protocol_file_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[defaults]\nhold_s = 2.5\n'
                 '[[exercise]]\nid = "smile_open"\nprompt = "Smile"\nrepetitions = 2\n')
    p = load_protocol(f)
    assert p.name == "mine" and p.exercises[0].hold_s == 2.5 and p.exercises[0].repetitions == 2
    assert p.source_text == f.read_text()


@pytest.mark.parametrize(("text", "needle"), [
    ("name = 'x'\n", "at least one [[exercise]]"),
    ("[[exercise]]\nid = 'a'\n", "'prompt'"),
    ("[[exercise]]\nid = 'a'\nprompt = 'p'\nhold_s = 'long'\n", "'hold_s' must be a number"),
    ("[[exercise]]\nid = 'a'\nprompt = 'p'\nrepetitions = 1.5\n", "must be an integer"),
    ("[[exercise]]\nid = 'a'\nprompt = 'p'\nhold_s = -1\n", "between 0"),
    ("[[exercise]]\nid = 'a'\nprompt = 'p'\nholds = 3\n", "unknown key(s) holds"),
    ("[[exercise]]\nid = 'Bad Id'\nprompt = 'p'\n", "lower-case"),
    ("[[exercise]]\nid = 'a'\nprompt = 'p'\n[[exercise]]\nid = 'a'\nprompt = 'q'\n", "duplicate id"),
    ("schema_version = 7\n[[exercise]]\nid = 'a'\nprompt = 'p'\n", "unsupported schema_version"),
    ("[[exercise]\n", "invalid TOML"),
])
def test_bad_protocols_give_one_line_errors(text: str, needle: str) -> None:
    with pytest.raises(BadInputError) as e:
        parse_protocol(text, "t")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_protocol_name_lists_shipped() -> None:
    with pytest.raises(BadInputError, match="palsy-basic"):
        load_protocol("no-such-protocol")
    with pytest.raises(BadInputError, match="not found"):
        load_protocol("/nonexistent/file.toml")
