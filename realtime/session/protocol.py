"""Guided exercise protocols: user-editable TOML files and a clock-driven runner.

A protocol is a list of exercises; each exercise is shown as a prompt with a countdown (``prepare``),
then repeated ``repetitions`` times as ``hold`` (do the movement) followed by ``rest`` (relax). The
runner is a pure function of the time since the protocol started, so the recorder, the window HUD and
the session loader all agree on which exercise, repetition and phase a timestamp belongs to. The schema
is documented in ``docs/formats.md`` ("Exercise protocols").
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.errors import BadInputError
from realtime.paths import data_dir

PROTOCOL_SCHEMA_VERSION = 1

PHASE_WAITING = "waiting"
"""Before the protocol started (negative time)."""
PHASE_PREPARE = "prepare"
"""The exercise's prompt is shown with a countdown to its first repetition."""
PHASE_HOLD = "hold"
"""The subject performs the movement and holds it."""
PHASE_REST = "rest"
"""The subject relaxes between repetitions (the per-repetition neutral reference)."""
PHASE_DONE = "done"
"""After the last exercise."""
PHASES = (PHASE_WAITING, PHASE_PREPARE, PHASE_HOLD, PHASE_REST, PHASE_DONE)

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MAX_DURATION_S = 3600.0


def protocols_dir() -> Path:
    """Where the shipped protocols live (``realtime/data/protocols``)."""
    return data_dir() / "protocols"


def available_protocols() -> list[str]:
    return sorted(p.stem for p in protocols_dir().glob("*.toml"))


@dataclass(frozen=True, slots=True)
class Exercise:
    id: str
    """Stable machine name (``brow_raise``); the clinical metrics key on it."""
    title: str
    """Short name shown in the HUD and reports."""
    prompt: str
    """The instruction shown while the exercise runs."""
    repetitions: int
    prepare_s: float
    hold_s: float
    rest_s: float
    regions: tuple[str, ...] = ()
    """Facial regions the exercise targets (``brow``, ``eye``, ``nose``, ``mouth``, ``cheek``)."""

    @property
    def duration_s(self) -> float:
        return self.prepare_s + self.repetitions * (self.hold_s + self.rest_s)


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    title: str
    description: str
    exercises: tuple[Exercise, ...]
    source_text: str
    """The TOML text it was parsed from (copied verbatim into each session folder)."""
    schema_version: int = PROTOCOL_SCHEMA_VERSION

    @property
    def duration_s(self) -> float:
        return sum(e.duration_s for e in self.exercises)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source_text.encode()).hexdigest()

    def exercise(self, exercise_id: str) -> Exercise:
        for e in self.exercises:
            if e.id == exercise_id:
                return e
        raise KeyError(exercise_id)


@dataclass(frozen=True, slots=True)
class Segment:
    """One contiguous phase of the timeline, ``start_s <= t < end_s`` (protocol time)."""

    start_s: float
    end_s: float
    exercise_index: int
    exercise_id: str
    repetition: int
    """1-based; 0 in ``prepare``."""
    phase: str


@dataclass(frozen=True, slots=True)
class PromptState:
    """What the HUD shows at one instant; also the labels the recorder writes for a frame."""

    t_s: float
    phase: str
    exercise_index: int
    """0-based index into the protocol's exercises; -1 while waiting or done."""
    exercise_id: str
    title: str
    prompt: str
    repetition: int
    repetitions: int
    phase_elapsed_s: float
    phase_remaining_s: float
    progress: float
    """Fraction of the whole protocol elapsed, in [0, 1]."""

    @property
    def countdown(self) -> int:
        """Whole seconds left in the phase, as displayed (3, 2, 1)."""
        return max(0, math.ceil(self.phase_remaining_s - 1e-9))

    @property
    def done(self) -> bool:
        return self.phase == PHASE_DONE

    def text(self) -> str:
        """One HUD/log line, e.g. ``Brow raise 2/3 · HOLD 2 · Raise both eyebrows``."""
        if self.phase == PHASE_DONE:
            return "Protocol complete"
        if self.phase == PHASE_WAITING:
            return "Waiting to start"
        if self.phase == PHASE_PREPARE:
            return f"{self.title}: get ready {self.countdown} · {self.prompt}"
        what = self.prompt if self.phase == PHASE_HOLD else "Relax"
        rep = f"{self.repetition}/{self.repetitions}"
        return f"{self.title} {rep} · {self.phase.upper()} {self.countdown} · {what}"


class ProtocolRunner:
    """Maps protocol time (seconds since the protocol started) to the prompt and frame labels."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.segments = build_timeline(protocol)
        self._starts = [s.start_s for s in self.segments]
        self.duration_s = protocol.duration_s

    def segment_at(self, t_s: float) -> Segment | None:
        if t_s < 0.0 or t_s >= self.duration_s or not self.segments:
            return None
        i = bisect.bisect_right(self._starts, t_s) - 1
        return self.segments[max(i, 0)]

    def prompt_at(self, t_s: float) -> PromptState:
        seg = self.segment_at(t_s)
        progress = min(max(t_s / self.duration_s, 0.0), 1.0) if self.duration_s > 0 else 1.0
        if seg is None:
            phase = PHASE_WAITING if t_s < 0.0 else PHASE_DONE
            return PromptState(t_s, phase, -1, "", "", "", 0, 0, 0.0, max(-t_s, 0.0), progress)
        ex = self.protocol.exercises[seg.exercise_index]
        return PromptState(
            t_s=t_s, phase=seg.phase, exercise_index=seg.exercise_index, exercise_id=ex.id, title=ex.title,
            prompt=ex.prompt, repetition=seg.repetition, repetitions=ex.repetitions,
            phase_elapsed_s=t_s - seg.start_s, phase_remaining_s=seg.end_s - t_s, progress=progress,
        )


def build_timeline(protocol: Protocol) -> list[Segment]:
    """The protocol's phases in order; zero-length phases are left out."""
    segs: list[Segment] = []
    t = 0.0
    for i, ex in enumerate(protocol.exercises):
        parts = [(PHASE_PREPARE, 0, ex.prepare_s)]
        for rep in range(1, ex.repetitions + 1):
            parts += [(PHASE_HOLD, rep, ex.hold_s), (PHASE_REST, rep, ex.rest_s)]
        for phase, rep, dur in parts:
            if dur > 0.0:
                segs.append(Segment(t, t + dur, i, ex.id, rep, phase))
                t += dur
    return segs


def _num(table: dict[str, Any], key: str, default: float | None, where: str, *,
         integer: bool = False) -> float:
    value = table[key] if key in table else (int(default) if integer and default is not None else default)
    if value is None:
        raise BadInputError(f"{where}: missing '{key}'")
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
    if wrong_type or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise BadInputError(f"{where}: '{key}' must be {kind}, got {value!r}")
    if not 0 <= value <= _MAX_DURATION_S:
        raise BadInputError(f"{where}: '{key}' must be between 0 and {_MAX_DURATION_S:g}, got {value}")
    return float(value)


def _text(table: dict[str, Any], key: str, default: str | None, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise BadInputError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def parse_protocol(text: str, name: str = "protocol") -> Protocol:
    """Parse and validate protocol TOML; every problem is one ``BadInputError`` line naming the field."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"protocol {name}: invalid TOML: {exc}") from None
    version = doc.get("schema_version", PROTOCOL_SCHEMA_VERSION)
    if version != PROTOCOL_SCHEMA_VERSION:
        raise BadInputError(f"protocol {name}: unsupported schema_version {version!r} "
                            f"(this version reads {PROTOCOL_SCHEMA_VERSION})")
    known = {"schema_version", "name", "title", "description", "defaults", "exercise"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise BadInputError(f"protocol {name}: unknown top-level key(s) {', '.join(unknown)}")
    pname = _text(doc, "name", name, f"protocol {name}")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise BadInputError(f"protocol {name}: [defaults] must be a table")
    where_d = f"protocol {name} [defaults]"
    d_reps = _num(defaults, "repetitions", 1, where_d, integer=True)
    d_prep = _num(defaults, "prepare_s", 3.0, where_d)
    d_hold = _num(defaults, "hold_s", 3.0, where_d)
    d_rest = _num(defaults, "rest_s", 2.0, where_d)
    raw = doc.get("exercise")
    if not isinstance(raw, list) or not raw:
        raise BadInputError(f"protocol {name}: needs at least one [[exercise]]")
    exercises: list[Exercise] = []
    allowed = {"id", "title", "prompt", "repetitions", "prepare_s", "hold_s", "rest_s", "regions"}
    for k, ex in enumerate(raw, start=1):
        where = f"protocol {name} exercise #{k}"
        if not isinstance(ex, dict):
            raise BadInputError(f"{where}: must be a table")
        extra = sorted(set(ex) - allowed)
        if extra:
            raise BadInputError(f"{where}: unknown key(s) {', '.join(extra)}")
        ex_id = _text(ex, "id", None, where)
        if not _ID_RE.match(ex_id):
            raise BadInputError(f"{where}: id {ex_id!r} must be lower-case letters, digits, '_' or '-'")
        if any(e.id == ex_id for e in exercises):
            raise BadInputError(f"{where}: duplicate id {ex_id!r}")
        where = f"protocol {name} exercise '{ex_id}'"
        reps = int(_num(ex, "repetitions", d_reps, where, integer=True))
        hold = _num(ex, "hold_s", d_hold, where)
        if reps < 1 or hold <= 0.0:
            raise BadInputError(f"{where}: needs repetitions >= 1 and hold_s > 0")
        regions = ex.get("regions", [])
        if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
            raise BadInputError(f"{where}: 'regions' must be a list of strings")
        exercises.append(Exercise(
            id=ex_id, title=_text(ex, "title", ex_id.replace("_", " ").capitalize(), where),
            prompt=_text(ex, "prompt", None, where), repetitions=reps,
            prepare_s=_num(ex, "prepare_s", d_prep, where), hold_s=hold,
            rest_s=_num(ex, "rest_s", d_rest, where),
            regions=tuple(regions),
        ))
    return Protocol(name=pname, title=_text(doc, "title", pname, f"protocol {name}"),
                    description=_text(doc, "description", "", f"protocol {name}"),
                    exercises=tuple(exercises), source_text=text)


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A shipped protocol by name (``palsy-basic``) or a TOML file path."""
    p = Path(name_or_path)
    if p.suffix.lower() != ".toml" and not p.exists():
        shipped = protocols_dir() / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise BadInputError(f"unknown protocol {str(name_or_path)!r} (shipped: "
                                f"{', '.join(available_protocols()) or 'none'}; or give a .toml file)")
        p = shipped
    if not p.is_file():
        raise BadInputError(f"protocol file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read protocol {p}: {exc}") from None
    return parse_protocol(text, p.stem)
