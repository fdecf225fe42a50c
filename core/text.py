"""Text utilities: a rule-based sentence splitter that needs no download.

:func:`split_sentences` cuts text into sentence spans that point back into the original string, so a compressor can
keep some sentences and rebuild the text from the original characters. It knows about:

* abbreviations and initials (``Dr. Smith``, ``e.g. this``, ``J. R. R. Tolkien``, ``U.S. Army``), decimals and
  version numbers (``3.14``, ``v2.0.1``), URLs, e-mail addresses and ellipses;
* quotes and brackets after the end mark (``He said "Stop." Then ...`` ends after the closing quote);
* blank lines (a paragraph break always ends a sentence) and list items (``- item``, ``* item``, ``1. item``,
  ``(a) item`` each start a new unit);
* fenced code blocks (```` ``` ````), kept whole as one unit (cut at line breaks only when too long);
* CJK and other end marks (``。！？``, Devanagari ``।``, Arabic ``؟``), which need no space after them;
* text with no boundary at all: a piece longer than ``max_chars`` is cut at the last clause mark (``;``, ``:``,
  ``,``) or space before the limit, else hard at the limit, so no unit is ever longer than ``max_chars``;
* Markdown structure: every unit has a ``kind`` (:data:`UNIT_KINDS`): ``"heading"`` (``# Title``: context for its
  section, not evidence by itself), ``"bullet"`` (a list item), ``"table_row"`` (one ``| a | b |`` line),
  ``"table_rule"`` (the ``|---|---|`` line under a table header), ``"code"`` (a fenced block) or ``"sentence"``.

Every unit carries its character span (``start``, ``end``) in the text that was split, so an application can cite the
exact source sentence. The splitter runs in time linear in the length of the text (no step rescans a paragraph from
its start), so a long or hostile passage cannot stall a compressor.

It is a heuristic splitter (like the rule-based ones in spaCy's ``sentencizer`` or pySBD), tuned for the
encyclopedic and web text that RAG retrieves; it never needs a model or a download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ABBREVIATIONS", "UNIT_KINDS", "Sentence", "split_sentences"]

# Abbreviations that are practically never the end of a sentence (they precede a name).
_TITLES = frozenset(
    """mr mrs ms dr prof rev fr sr jr st mt ft gen col lt sgt capt cmdr adm gov sen rep pres supt hon messrs mme mlle
    cf approx vs viz al eds trans dept univ assn bros corp inc ltd co e.g i.e etc a.m p.m u.s u.k u.n e.u u.s.a d.c
    ph.d b.a m.a b.sc m.sc esp incl""".split()
)
# Abbreviations that precede a number ("No. 5", "vol. 2", "c. 1604", "Jan. 5"); elsewhere they are words ("said no.").
_BEFORE_NUMBER = frozenset(
    """no nos vol vols p pp fig figs eq eqs ch sec art op c ca fl b d r ed est jan feb mar apr jun jul aug sep sept
    oct nov dec""".split()
)
ABBREVIATIONS: frozenset[str] = _TITLES | _BEFORE_NUMBER
"""Lower-case abbreviations (without the final period) after which a period does not end a sentence by itself."""

# Abbreviations that often do end a sentence ("... founded in the U.S. It ..."): split there when the next word is a
# typical sentence opener.
_MAY_END = frozenset("etc inc ltd co corp bros u.s u.k u.n e.u u.s.a d.c a.m p.m jr sr al".split())
_OPENERS = frozenset(
    """the a an he she it they we i you his her its their our this that these those there here in on at as after
    before during when while however but and or so then also since although though if for from by with to of
    many most some one two three several both each all no not every after later today yet still such""".split()
)

_CJK_END = "。！？｡"
_OTHER_END = "।॥؟۔"
_END = ".!?…" + _CJK_END + _OTHER_END
_CLOSERS = "\"'”’»)]}」』】》›"
_OPENERS_PUNCT = "\"'“‘«([{「『【《‹¿¡"

# A list item starts a line: "- ", "* ", "• ", "1. ", "1) ", "(a) ", "a) "; a Markdown heading is a line of its own.
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+•▪◦‣·]|\d{1,3}[.)]|\(?[a-zA-Z]\)|\(\d{1,3}\))[ \t]+\S")
_HEADING = re.compile(r"[ \t]*#{1,6}[ \t]+\S")
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
# End marks, then any closing quotes/brackets.
_BOUNDARY = re.compile(rf"(?P<mark>[{re.escape(_END)}]+)(?P<close>[{re.escape(_CLOSERS)}]*)")
_WORD = re.compile(r"\S{1,64}")  # the first 64 characters of the next word are all the rules look at


UNIT_KINDS: tuple[str, ...] = ("sentence", "heading", "bullet", "table_row", "table_rule", "code")
"""What a unit of :func:`split_sentences` is. Headings and table rules are context, not evidence by themselves."""

_TABLE_ROW = re.compile(r"[ \t]*\|.*\|[ \t]*$")
_TABLE_RULE = re.compile(r"[ \t]*\|(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*$")
_WORD_STOP = frozenset("\"'“‘«([{")  # with whitespace: what ends the word before an end mark
_MAX_WORD = 64  # longest word looked at before an end mark: abbreviations and initials are short


@dataclass(frozen=True)
class Sentence:
    """One unit of a text: a sentence, a heading, a list item, a table row, a code block, or a cut of an over-long run.

    ``text == source[start:end]``: the span points into the string that was split, without the whitespace around it.
    ``kind`` is one of :data:`UNIT_KINDS`.
    """

    text: str
    start: int
    end: int
    kind: str = "sentence"


def split_sentences(text: str, *, max_chars: int = 1000) -> list[Sentence]:
    r"""Split ``text`` into sentences, each a span of the original string.

    Args:
        text: Any text (prose, lists, code, any script).
        max_chars: Longest unit returned; longer runs without a boundary are cut (see the module docstring).

    Returns:
        The units in order, each with its ``kind`` and its span; empty for blank text. Concatenating
        ``text[s.start:s.end]`` with the whitespace between them gives back the original text.

    Raises:
        ValueError: ``max_chars`` is below 1.

    Example:
        >>> [s.text for s in split_sentences("Dr. Watson paid $3.50. He left! Then: \"Why?\" she asked.")]
        ['Dr. Watson paid $3.50.', 'He left!', 'Then: "Why?" she asked.']
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars!r}.")
    out: list[Sentence] = []
    for start, end, is_code in _blocks(text):
        pieces = [(start, end, "code")] if is_code else _split_prose(text, start, end)
        for s, e, kind in pieces:
            for s2, e2 in _cap_length(text, s, e, max_chars, is_code):
                s2, e2 = _strip(text, s2, e2)
                if s2 < e2:
                    out.append(Sentence(text[s2:e2], s2, e2, kind))
    return out


# ----------------------------------------------------------------------------------------------------------- blocks
def _blocks(text: str) -> list[tuple[int, int, bool]]:
    """Cut text into fenced code blocks (atomic) and prose paragraphs (split at blank lines)."""
    spans: list[tuple[int, int, bool]] = []
    pos = 0
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        open_ = fences[i]
        j = next((j for j in range(i + 1, len(fences)) if fences[j].group(1) == open_.group(1)), None)
        if j is None:  # an unclosed fence: the code runs to the end of the text
            close_end = len(text)
            next_i = len(fences)
        else:
            line_end = text.find("\n", fences[j].end())
            close_end = len(text) if line_end < 0 else line_end
            next_i = j + 1
        spans.extend(_paragraphs(text, pos, open_.start()))
        spans.append((open_.start(), close_end, True))
        pos = close_end
        i = next_i
    spans.extend(_paragraphs(text, pos, len(text)))
    return spans


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    spans = []
    pos = start
    for m in _BLANK_LINE.finditer(text, start, end):
        spans.append((pos, m.start(), False))
        pos = m.end()
    spans.append((pos, end, False))
    return [s for s in spans if text[s[0]:s[1]].strip()]


# ------------------------------------------------------------------------------------------------------------ prose
def _split_prose(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Units of one paragraph: first at line-level structure (headings, list items, table rows), then at end marks."""
    blocks: list[tuple[int, str]] = []  # (start, kind) of each line-level block; a block runs to the next one
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        line_end = end if nl < 0 else nl
        if _HEADING.match(text, pos, line_end):
            blocks += [(pos, "heading"), (line_end, "sentence")]
        elif _TABLE_ROW.match(text, pos, line_end):
            kind = "table_rule" if _TABLE_RULE.match(text, pos, line_end) else "table_row"
            blocks += [(pos, kind), (line_end, "sentence")]
        elif _LIST_ITEM.match(text, pos, line_end):
            blocks.append((pos, "bullet"))
        pos = line_end + 1
    cuts: dict[int, str] = {start: "sentence"}
    for at, kind in blocks:
        if at > start and cuts.get(at) in ("heading", "table_row", "table_rule") and kind == "sentence":
            continue
        cuts[at] = kind
    points = sorted(cuts)
    pieces: list[tuple[int, int, str]] = []
    for a, b in zip(points, [*points[1:], end], strict=True):
        if a >= b:
            continue
        kind = cuts[a]
        if kind in ("heading", "table_row", "table_rule"):
            pieces.append((a, b, kind))  # one line, never cut at end marks ("| 3.5 | ok. |", "# Intro. Part 2")
        else:
            pieces.extend((s, e, kind) for s, e in _split_marks(text, a, b))
    return pieces


def _split_marks(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out = []
    pos = start
    last = end  # end of the last non-space character: a mark followed only by spaces ends the piece anyway
    while last > start and text[last - 1].isspace():
        last -= 1
    for m in _BOUNDARY.finditer(text, start, end):
        cut = m.end()
        if cut >= last:
            break
        if _is_boundary(text, m, start, end):
            out.append((pos, cut))
            pos = cut
    out.append((pos, end))
    return out


def _word_before(text: str, start: int, pos: int) -> tuple[str, int]:
    """The word that ends at ``pos`` (at most ``_MAX_WORD`` characters, scanning back no further than ``start``)."""
    i = pos
    floor = max(start, pos - _MAX_WORD)
    while i > floor and not text[i - 1].isspace() and text[i - 1] not in _WORD_STOP:
        i -= 1
    return text[i:pos], i


def _at_line_start(text: str, start: int, pos: int) -> bool:
    """Whether only spaces or tabs stand between the start of the line (or ``start``) and ``pos``."""
    i = pos
    while i > start and text[i - 1] != "\n" and text[i - 1].isspace():
        i -= 1
    return i == start or text[i - 1] == "\n"


def _is_boundary(text: str, m: re.Match[str], start: int, end: int) -> bool:
    mark, close = m.group("mark"), m.group("close")
    if mark[-1] in _CJK_END + _OTHER_END:
        return True  # these scripts put no space after the end mark
    after = m.end()
    if after < end and not text[after].isspace():
        return False  # "3.14", "example.com", "e.g.this": no space, no boundary
    nxt = _next_word(text, after, end)
    if not nxt or nxt[0].islower():
        return False  # a lower-case continuation never starts a sentence ("e.g. this", "Really? yes")
    if mark != ".":
        return True  # "?", "!", "...", "…", "?!"
    if close:
        return True  # 'he said "Stop." Then ...': a quote or bracket closed after the period
    word, word_start = _word_before(text, start, m.start())
    if not word or len(word) >= _MAX_WORD:
        return True  # no word, or one too long to be an abbreviation or an initial
    if _at_line_start(text, start, word_start) and re.fullmatch(r"\d{1,3}|[a-zA-Z]", word):
        return False  # a list marker at the start of a line: "1. Boil water."
    lower = word.lower()
    if len(word) == 1 and word.isalpha():
        return False  # an initial or a one-letter abbreviation: "J. R. R. Tolkien", "z. B."
    if lower in _BEFORE_NUMBER and nxt[0].isdigit():
        return False
    if lower in _TITLES or re.fullmatch(r"(?:[a-z]\.)+[a-z]", lower):  # "Dr", "etc", "U.S", "Ph.D"
        return lower in _MAY_END and _opener(nxt)
    return True


def _next_word(text: str, pos: int, end: int) -> str:
    while pos < end and (text[pos].isspace() or text[pos] in _OPENERS_PUNCT):
        pos += 1
    m = _WORD.match(text, pos, end)
    return m.group(0) if m else ""


def _opener(word: str) -> bool:
    return word.strip(_OPENERS_PUNCT + _CLOSERS + ",;:").lower() in _OPENERS


# ----------------------------------------------------------------------------------------------------------- length
def _cap_length(text: str, start: int, end: int, max_chars: int, is_code: bool) -> list[tuple[int, int]]:
    """Cut a span longer than ``max_chars``: at line breaks (code) or clause marks / spaces (prose), else hard."""
    out = []
    while end - start > max_chars:
        limit = start + max_chars
        window = text[start:limit]
        cut = -1
        if is_code:
            cut = window.rfind("\n")
        else:
            for pattern in (r"[;:]\s", r",\s", r"\s"):
                hits = [m.end() for m in re.finditer(pattern, window) if m.end() > max_chars // 3]
                if hits:
                    cut = hits[-1]
                    break
        if cut <= 0:
            cut = max_chars
        out.append((start, start + cut))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    out.append((start, end))
    return out


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
