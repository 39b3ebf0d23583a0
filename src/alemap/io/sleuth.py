"""Reader for Sleuth / GingerALE foci text files.

The format (spec section 7)::

    // Reference=MNI
    // Doe J, 2011: Words > Rest
    // Subjects=14
    -44	12	24
    -38	20	20

    // Roe K, 2015: Pictures > Rest
    // Subjects=22
    40	-60	-12

An experiment is a run of ``//`` header lines whose last line is
``// Subjects=N``, followed by one ``x y z`` focus per line. Blank lines are
ignored wherever they appear (as in NiMARE), so they never split or end an
experiment; only ``//`` runs do. ``// Reference=`` may appear again mid-file
and sets the space of the experiments that follow it.

Coordinates are returned in the space the file declares; Talairach -> MNI
conversion belongs to :mod:`alemap.space`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from alemap.data import ExperimentSet, FocusOrigin
from alemap.exceptions import InputError, ParameterError

__all__ = ["read_sleuth", "parse_sleuth", "read_text_file", "canonical_space", "study_key"]

#: Largest sample size accepted (guards the int64 column against typos such as 1e30).
MAX_SUBJECTS = 10_000_000

#: Largest absolute coordinate accepted, in mm. Brains span about +-100 mm; a value
#: beyond +-10 m is a typo or a unit error, and keeping it out keeps the mm -> voxel
#: arithmetic far from overflow. Foci merely outside the template are not an error:
#: they are excluded later and reported (``provenance.json``).
MAX_ABS_MM = 10_000.0

#: Largest foci file read (text or JSON); a bigger file is almost surely not a foci file.
MAX_TEXT_BYTES = 1 << 30

#: Accepted spellings of the two reference spaces (upper case, spaces removed).
SPACE_NAMES = {"MNI": "MNI", "MNI152": "MNI", "TAL": "TAL", "TALAIRACH": "TAL"}

_REFERENCE = re.compile(r"^//\s*reference\s*=\s*(.*)$", re.IGNORECASE)
_SUBJECTS = re.compile(r"^//\s*subjects\s*=\s*(.*)$", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)", re.ASCII)
_SEPARATORS = re.compile(r"[\s,]+")
_COLON = re.compile(r"[:;]")
_EXAMPLE_HEADER = "'// Author, Year: Contrast' and '// Subjects=N'"


# ------------------------------------------------------------------ shared helpers
def read_text_file(path: str | os.PathLike) -> str:
    """Read a text file, refusing binary content.

    Tries UTF-8 (a BOM is dropped; UTF-16 with a BOM is honoured, and so is
    UTF-16 without one when every other byte is zero), then Windows-1252 and
    Latin-1, each only if the result is printable text.

    Raises
    ------
    InputError
        If the file is missing, a directory, not a regular file, unreadable,
        larger than :data:`MAX_TEXT_BYTES`, or not a text file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found; check the path and the working directory.")
    if p.is_dir():
        raise InputError(f"{p}: is a directory; give the path of a foci file inside it.")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file (a pipe or a device?); save the foci to a file and give its path.")
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            from alemap._limits import format_size

            raise InputError(
                f"{p}: the file is {format_size(size)}, more than the {format_size(MAX_TEXT_BYTES)} alemap reads "
                "as a foci file (alemap.io.sleuth.MAX_TEXT_BYTES); check that this is the foci file."
            )
        data = p.read_bytes()
    except OSError as err:
        raise InputError(f"{p}: cannot be read ({err.strerror or err}); check the file's permissions.") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    elif b"\x00" not in data:
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue
            if encoding == "utf-8-sig" or _is_printable(text):
                return text
    else:
        text = _utf16_without_bom(data)
        if text is not None:
            return text
    raise InputError(
        f"{p}: not a text file (binary content that is neither UTF-8 nor Latin-1 text); "
        "export the foci as plain text (UTF-8)."
    )


def _utf16_without_bom(data: bytes) -> str | None:
    """Text of BOM-less UTF-16 (zero high bytes of ASCII), or None if it is not that."""
    if len(data) < 2 or len(data) % 2:
        return None
    for encoding, zeros in (("utf-16-le", data[1::2]), ("utf-16-be", data[0::2])):
        if zeros.count(0) >= 0.9 * len(zeros):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None
            return text if "\x00" not in text and _is_printable(text) else None
    return None


def _is_printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\n\r\f\v" for ch in text)


def canonical_space(value: str) -> str | None:
    """Map ``MNI``/``MNI152``/``TAL``/``Talairach`` (any case, spaces ignored) to ``"MNI"``/``"TAL"``.

    Returns None for anything else.
    """
    return SPACE_NAMES.get(re.sub(r"\s+", "", str(value)).upper())


def study_key(name: str) -> str:
    """Study part of an experiment name ``"Author, Year: Contrast"``.

    The split is at the first ``:`` or ``;`` after a 19xx/20xx year, else at
    the first ``:`` or ``;``; with neither, the whole name is the study.
    """
    year = _YEAR.search(name)
    start = year.end() if year else 0
    cut = _COLON.search(name, start)
    if cut is None and year is not None:
        cut = _COLON.search(name)
    key = name[: cut.start()].strip() if cut else name
    return key or name


def resolve_space_argument(space: str | None) -> str | None:
    """Canonical form of a reader's ``space=`` argument (None stays None).

    Raises
    ------
    ParameterError
        If ``space`` is not a known spelling of MNI or Talairach.
    """
    if space is None:
        return None
    canonical = canonical_space(space)
    if canonical is None:
        raise ParameterError(f"space={space!r} is not a known space; use 'MNI' or 'Talairach'.")
    return canonical


# ------------------------------------------------------------------ parser state
@dataclass
class _Experiment:
    name: str
    line: int
    n_subjects: int
    space: str
    xyz: list = field(default_factory=list)
    origins: list = field(default_factory=list)

    def record(self) -> dict:
        return {
            "name": self.name,
            "study": study_key(self.name),
            "n_subjects": self.n_subjects,
            "space": self.space,
            "xyz": self.xyz,
            "origins": self.origins,
        }


class _SleuthParser:
    """Line-by-line state machine; one instance per file."""

    def __init__(self, source: str, space: str | None) -> None:
        self.source = source
        self.space = space
        self.header: list[tuple[int, str]] = []
        self.current: _Experiment | None = None
        self.records: list[dict] = []
        self.first_line: dict[str, int] = {}

    def fail(self, line: int, message: str) -> InputError:
        return InputError(f"{self.source}:{line}: {message}")

    def feed(self, lineno: int, raw: str) -> None:
        text = raw.strip()
        if not text:
            return
        if text.startswith("//"):
            self.header_line(lineno, text)
        else:
            self.coordinate_line(lineno, text)

    # -- header lines
    def header_line(self, lineno: int, text: str) -> None:
        self.close_current(next_line=lineno)
        reference = _REFERENCE.match(text)
        subjects = _SUBJECTS.match(text)
        if reference:
            self.set_reference(lineno, text, reference.group(1))
        elif subjects:
            self.start_experiment(lineno, text, subjects.group(1).strip())
        else:
            self.header.append((lineno, text[2:].strip()))

    def set_reference(self, lineno: int, text: str, value: str) -> None:
        space = canonical_space(value)
        if space is None:
            raise self.fail(
                lineno,
                f"unknown reference space {value.strip()!r} in {text!r}; "
                "accepted values are MNI, MNI152, Talairach and TAL (for example '// Reference=MNI').",
            )
        self.space = space
        self.header = []  # comment lines before a Reference line are not a name

    def start_experiment(self, lineno: int, text: str, value: str) -> None:
        if not self.header:
            raise self.fail(
                lineno,
                f"{text!r} has no experiment name line above it; put a line such as "
                "'// Author, Year: Contrast' directly before it.",
            )
        name_line = self.header[0][0]
        name = " ".join(part for _, part in self.header if part)
        self.header = []
        if not name:
            raise self.fail(
                name_line, "the experiment name is empty; write it after '//', e.g. '// Doe J, 2011: Words > Rest'."
            )
        n_subjects = self.parse_subjects(lineno, text, value)
        if self.space is None:
            raise self.fail(
                name_line,
                f"experiment {name!r} comes before any '// Reference=' line, so its coordinate space is unknown; "
                "add '// Reference=MNI' (or '// Reference=Talairach') as the first line of the file.",
            )
        if name in self.first_line:
            raise self.fail(
                name_line,
                f"experiment name {name!r} is used twice (lines {self.first_line[name]} and {name_line}); "
                "make the names unique, for example by adding the contrast after the ':'.",
            )
        self.first_line[name] = name_line
        self.current = _Experiment(name, name_line, n_subjects, self.space)

    def parse_subjects(self, lineno: int, text: str, value: str) -> int:
        fix = "write a positive whole number of subjects, e.g. '// Subjects=12'."
        if not _NUMBER.fullmatch(value):
            raise self.fail(lineno, f"the number of subjects in {text!r} is not a number; {fix}")
        number = float(value)
        if not math.isfinite(number) or not number.is_integer():
            raise self.fail(lineno, f"the number of subjects in {text!r} is not a whole number; {fix}")
        if number <= 0:
            raise self.fail(lineno, f"the number of subjects in {text!r} must be positive; {fix}")
        if number > MAX_SUBJECTS:
            raise self.fail(lineno, f"the number of subjects in {text!r} is implausibly large; {fix}")
        return int(number)

    def close_current(self, next_line: int | None) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        if not current.xyz:
            where = f"the next header starts at line {next_line}" if next_line else "the file ends"
            raise self.fail(
                current.line,
                f"experiment {current.name!r} has no foci ({where}); add one 'x y z' line per focus "
                "after its '// Subjects=' line, or delete the experiment.",
            )
        self.records.append(current.record())

    # -- coordinate lines
    def coordinate_line(self, lineno: int, text: str) -> None:
        if self.current is None:
            if self.header:
                first, _ = self.header[0]
                name = " ".join(part for _, part in self.header if part)
                raise self.fail(
                    first,
                    f"experiment {name!r} has no '// Subjects=N' line before its first focus (line {lineno}); "
                    "add e.g. '// Subjects=12' as the last header line.",
                )
            raise self.fail(
                lineno,
                f"focus {text!r} comes before any experiment header; add {_EXAMPLE_HEADER} lines above it.",
            )
        self.current.xyz.append(self.parse_xyz(lineno, text))
        self.current.origins.append(FocusOrigin(self.source, lineno))

    def parse_xyz(self, lineno: int, text: str) -> tuple[float, float, float]:
        tokens = [t for t in _SEPARATORS.split(text.replace("\u2212", "-")) if t]
        if len(tokens) != 3:
            raise self.fail(
                lineno,
                f"expected exactly 3 numbers (x y z) but found {len(tokens)} in {text!r}; "
                "write one focus per line as three numbers separated by tabs, spaces or commas.",
            )
        values = []
        for token in tokens:
            if _NONFINITE.fullmatch(token) or (_NUMBER.fullmatch(token) and not math.isfinite(float(token))):
                raise self.fail(lineno, f"coordinate {token!r} in {text!r} is NaN or infinite; give finite mm values.")
            if not _NUMBER.fullmatch(token):
                raise self.fail(
                    lineno,
                    f"coordinate {token!r} in {text!r} is not a number; "
                    f"header lines must start with '//', foci must be three numbers.",
                )
            value = float(token)
            if abs(value) > MAX_ABS_MM:
                raise self.fail(
                    lineno,
                    f"coordinate {token!r} in {text!r} is implausibly large (beyond +-{MAX_ABS_MM:g} mm); "
                    "give MNI or Talairach coordinates in mm.",
                )
            values.append(value)
        return values[0], values[1], values[2]

    # -- end of file
    def finish(self) -> ExperimentSet:
        self.close_current(next_line=None)
        if self.header:
            first, _ = self.header[0]
            name = " ".join(part for _, part in self.header if part)
            raise self.fail(
                first,
                f"header {name!r} is not followed by a '// Subjects=N' line and foci; "
                "complete the experiment or delete these lines.",
            )
        if not self.records:
            raise self.fail(1, f"no experiments found; each experiment needs {_EXAMPLE_HEADER} lines and foci.")
        return ExperimentSet.from_records(self.records)


# ------------------------------------------------------------------ public API
def parse_sleuth(text: str, source: str = "<text>", *, space: str | None = None) -> ExperimentSet:
    """Parse Sleuth text already in memory.

    Parameters
    ----------
    text : str
        File content (CRLF, CR and LF line ends are all accepted).
    source : str
        Name used in messages and in every focus's :class:`FocusOrigin`.
    space : {"MNI", "TAL", "Talairach"}, optional
        Space for experiments before any ``// Reference=`` line. By default
        such experiments are an error.

    Returns
    -------
    ExperimentSet
        Coordinates unconverted, in the declared space(s).
    """
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InputError(f"{source}: the file is empty; a Sleuth file starts with '// Reference=MNI'.")
    parser = _SleuthParser(source, resolve_space_argument(space))
    for lineno, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        parser.feed(lineno, line)
    return parser.finish()


def read_sleuth(path: str | os.PathLike, *, space: str | None = None) -> ExperimentSet:
    """Read a Sleuth / GingerALE foci text file.

    Parameters
    ----------
    path : str or path-like
        The ``.txt`` file.
    space : {"MNI", "TAL", "Talairach"}, optional
        Fallback space when the file has no ``// Reference=`` line before an
        experiment; by default that is an error.

    Returns
    -------
    ExperimentSet
        One experiment per ``// Subjects=`` block, foci tagged with file and line.

    Raises
    ------
    InputError
        On any malformed content; the message names ``file:line`` and the fix.
    """
    return parse_sleuth(read_text_file(path), str(path), space=space)
