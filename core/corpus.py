"""Corpus loading and chunking: JSONL files or folders of ``.txt``/``.md`` files into :class:`~ragzip.Passage` lists.

Formats:

- **JSONL**: one JSON object a line, ``{"id": ..., "text": ..., "title": ...}``. ``text`` is required; ``id`` is
  optional (default: the line number, ``"L<n>"``); ``title`` and every other key go into the passage's metadata.
  Blank lines are ignored.
- **A folder**: every ``*.txt``, ``*.md`` and ``*.markdown`` file below it (hidden files and folders skipped), one
  document each; the id is the path relative to the folder (``guides/setup.md``); the title is a Markdown file's first
  ``# heading``, else the file name without its extension.
- **One** ``.txt``/``.md`` file: a single document.

What is never silent:

- Errors (:class:`~ragzip.InputError`) for: a missing path, a corpus with no documents, a line that is not JSON
  (line number given), a record without ``text``, bytes that are not UTF-8 (file and byte offset given), duplicate ids.
- Documents whose text is empty or only whitespace are **skipped**: they would embed to noise and retrieve nothing
  useful. Each load logs one warning naming how many were skipped and the first few ids, and the returned
  :class:`Corpus` counts them in ``stats.skipped_empty`` (saved indexes keep these stats in ``meta.json``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragzip.errors import ConfigError, InputError
from ragzip.types import Passage

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_MD_HEADING = re.compile(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SHOW_IDS = 5


@dataclass
class CorpusStats:
    """What loading a corpus did: documents read, kept, and skipped (with their ids)."""

    source: str = ""
    documents: int = 0
    skipped_empty: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        """Documents read and kept: those not skipped as empty."""
        return self.documents - len(self.skipped_empty)

    def as_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict, with at most the first 100 skipped ids."""
        return {"source": self.source, "documents": self.documents, "kept": self.kept,
                "skipped_empty": len(self.skipped_empty), "skipped_empty_ids": self.skipped_empty[:100]}


class Corpus(list):  # type: ignore[type-arg]
    """A ``list[Passage]`` that also carries the :class:`CorpusStats` of the load that produced it.

    Args:
        passages: The passages, in order.
        stats: How they were loaded; by default, stats that count one document per passage.
    """

    def __init__(self, passages: Iterable[Passage] = (), stats: CorpusStats | None = None) -> None:
        super().__init__(passages)
        self.stats = stats if stats is not None else CorpusStats(documents=len(self))


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        raise InputError(
            f"{path} is not valid UTF-8: byte offset {start} (line {line}) holds {data[start:start + 4]!r}. "
            "ragzip reads corpora as UTF-8; convert the file first, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}` (use the file's real encoding)."
        ) from None


def _skip_empty(passages: list[Passage], stats: CorpusStats) -> Corpus:
    kept = [p for p in passages if p.text.strip()]
    stats.skipped_empty = [p.id for p in passages if not p.text.strip()]
    if stats.skipped_empty:
        shown = ", ".join(repr(i) for i in stats.skipped_empty[:_SHOW_IDS])
        more = f" and {len(stats.skipped_empty) - _SHOW_IDS} more" if len(stats.skipped_empty) > _SHOW_IDS else ""
        logger.warning("skipped %d empty or whitespace-only document(s) in %s: %s%s",
                       len(stats.skipped_empty), stats.source, shown, more)
    if not kept:
        detail = f" ({len(passages)} document(s), all empty or whitespace)" if passages else ""
        raise InputError(f"corpus {stats.source} has no documents to index{detail}. Give a JSONL file with one "
                         '{"id": ..., "text": ...} object a line, or a folder of non-empty .txt/.md files.')
    return Corpus(kept, stats)


def _check_unique(ids: Sequence[str], where: Sequence[str], source: str) -> None:
    first: dict[str, int] = {}
    for i, doc_id in enumerate(ids):
        if doc_id in first:
            raise InputError(f"duplicate id {doc_id!r} in corpus {source} ({where[first[doc_id]]} and {where[i]}). "
                             "Every document needs a unique id: rename or remove one of them.")
        first[doc_id] = i


def _load_jsonl(path: Path) -> Corpus:
    text = _decode(path.read_bytes(), path)
    passages: list[Passage] = []
    where: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno}). Each line of "
                             'a JSONL corpus must be one JSON object, e.g. {"id": "d1", "text": "..."}.') from None
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {lineno}: expected a JSON object with a \"text\" key, got "
                             f"{type(record).__name__}.")
        if "text" not in record:
            keys = ", ".join(repr(k) for k in record) or "none"
            raise InputError(f"{path}, line {lineno}: no \"text\" key (keys: {keys}). Each record needs the passage "
                             'text under "text"; rename the field holding it.')
        body = record.pop("text")
        if not isinstance(body, str):
            raise InputError(f"{path}, line {lineno}: \"text\" must be a string, got {type(body).__name__}.")
        doc_id = record.pop("id", None)
        if doc_id is None or doc_id == "":
            doc_id = f"L{lineno}"
        elif not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise InputError(f"{path}, line {lineno}: \"id\" must be a string or an integer, got {doc_id!r}.")
        title = record.get("title")
        if title is not None and not isinstance(title, str):
            raise InputError(f"{path}, line {lineno}: \"title\" must be a string, got {type(title).__name__}.")
        passages.append(Passage(body, id=str(doc_id), metadata=record))
        where.append(f"line {lineno}")
    _check_unique([p.id for p in passages], where, str(path))
    return _skip_empty(passages, CorpusStats(source=str(path), documents=len(passages)))


def _title(text: str, path: Path) -> str:
    if path.suffix.lower() in (".md", ".markdown") and (match := _MD_HEADING.search(text)):
        return match.group(1)
    return path.stem


def _text_file_passage(path: Path, doc_id: str) -> Passage:
    text = _decode(path.read_bytes(), path)
    return Passage(text, id=doc_id, metadata={"title": _title(text, path)})


def _load_folder(path: Path) -> Corpus:
    files, others = [], 0
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not item.is_file():
            continue
        if item.suffix.lower() in TEXT_SUFFIXES:
            files.append(item)
        else:
            others += 1
    if not files:
        raise InputError(f"corpus folder {path} has no .txt or .md files (found {others} other file(s)). Put one "
                         "document per .txt/.md file there, or pass a JSONL file instead.")
    if others:
        logger.info("corpus folder %s: ignored %d file(s) that are not %s", path, others, "/".join(TEXT_SUFFIXES))
    passages = [_text_file_passage(f, f.relative_to(path).as_posix()) for f in files]
    return _skip_empty(passages, CorpusStats(source=str(path), documents=len(passages)))


def load_corpus(path: str | Path) -> Corpus:
    r"""Load a corpus: a JSONL file, a folder of ``.txt``/``.md`` files, or one ``.txt``/``.md`` file.

    Args:
        path: The file or folder.

    Returns:
        A :class:`Corpus` (a ``list[Passage]``) in file order; ``.stats`` says how many documents were read and which
        empty ones were skipped.

    Raises:
        InputError: missing path, no documents, invalid JSON (with line number), missing ``text``, non-UTF-8 bytes
            (with file and byte offset), duplicate ids.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
        >>> _ = f.write_text('{"id": "a", "text": "Paris is in France.", "title": "Paris"}\n')
        >>> [(p.id, p.metadata["title"]) for p in load_corpus(f)]
        [('a', 'Paris')]
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"corpus {str(path)!r} does not exist. Pass a JSONL file ({{\"id\", \"text\"}} per line) or a "
                         "folder of .txt/.md files.")
    if path.is_dir():
        return _load_folder(path)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return _skip_empty([_text_file_passage(path, path.name)], CorpusStats(source=str(path), documents=1))
    return _load_jsonl(path)


# --- chunking -------------------------------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (or ellipsis), optionally followed by closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u2019\u201d)\]]*\s+")
_TOKEN = re.compile(r"\S+")


def _units(text: str, max_words: int, window: int) -> list[tuple[int, int, int]]:
    """Sentence spans ``(start, end, n_words)`` in order; a sentence over ``max_words`` is cut into ``window``-word pieces."""
    units: list[tuple[int, int, int]] = []
    para_start = 0
    for p_end, p_next in [m.span() for m in _PARAGRAPH.finditer(text)] + [(len(text), len(text))]:
        sent_start = para_start
        for s_end in [m.end() for m in _SENTENCE_END.finditer(text, para_start, p_end)] + [p_end]:
            words = list(_TOKEN.finditer(text, sent_start, s_end))
            step = max_words if len(words) <= max_words else window
            for i in range(0, len(words), step):
                piece = words[i:i + step]
                units.append((piece[0].start(), piece[-1].end(), len(piece)))
            sent_start = s_end
        para_start = p_next
    return units


def chunk_text(text: str, chunk_words: int = 120, overlap: int = 20) -> list[str]:
    """Cut ``text`` into chunks of at most ``chunk_words`` words, ending at sentence/paragraph boundaries if possible.

    Sentences are packed greedily. The next chunk starts with the trailing whole sentences of the previous one that
    fit in ``overlap`` words (none if the last sentence is longer). A sentence longer than ``chunk_words`` is cut into
    windows of ``min(overlap, chunk_words - overlap)`` words (``chunk_words`` when ``overlap`` is 0), so text without
    punctuation still gets exact word-level chunks and overlap. Each chunk is a verbatim slice of ``text``.

    Example:
        >>> chunk_text("One two three. Four five six. Seven eight.", chunk_words=6, overlap=3)
        ['One two three. Four five six.', 'Four five six. Seven eight.']
    """
    _check_chunking(chunk_words, overlap)
    window = min(overlap, chunk_words - overlap) if overlap else chunk_words
    units = _units(text, chunk_words, window)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        begin, words = i, 0
        while i < len(units) and words + units[i][2] <= chunk_words:
            words += units[i][2]
            i += 1
        chunks.append((begin, i))  # every unit has <= chunk_words words, so i > begin
        if i >= len(units):
            break
        # Carry trailing units that fit in `overlap` words and leave room for the next new unit.
        back, carried = i, 0
        while (back - 1 > begin and carried + units[back - 1][2] <= overlap
               and carried + units[back - 1][2] + units[i][2] <= chunk_words):
            back -= 1
            carried += units[back][2]
        i = back
    return [text[units[a][0]:units[b - 1][1]] for a, b in chunks]


def _check_chunking(chunk_words: int, overlap: int) -> None:
    if isinstance(chunk_words, bool) or not isinstance(chunk_words, int) or chunk_words < 1:
        raise ConfigError(f"chunk_words = {chunk_words!r} must be a positive integer (words per chunk), e.g. 120.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_words:
        raise ConfigError(f"chunk_overlap = {overlap!r} must be an integer in [0, chunk_words) = [0, {chunk_words}); "
                          "e.g. 20 for chunks of 120 words.")


def chunk_passages(passages: Sequence[Passage], chunk_words: int = 120, overlap: int = 20) -> list[Passage]:
    """Split documents into retrieval chunks (see :func:`chunk_text` for where they are cut).

    Every chunk is a new :class:`~ragzip.Passage` with id ``"<doc id>#<n>"`` (``n`` from 0, also for a document that
    fits in one chunk) and the document's metadata plus ``doc_id``, ``title`` (the document's, else its id) and
    ``chunk_index``. Empty documents yield no chunk and are logged.

    Example:
        >>> [p.id for p in chunk_passages([Passage("A b. C d.", id="doc")], chunk_words=2, overlap=0)]
        ['doc#0', 'doc#1']
    """
    _check_chunking(chunk_words, overlap)
    out: list[Passage] = []
    empty = []
    for doc in passages:
        pieces = chunk_text(doc.text, chunk_words, overlap)
        if not pieces:
            empty.append(doc.id)
        for n, piece in enumerate(pieces):
            meta = {**doc.metadata, "doc_id": doc.id, "title": doc.metadata.get("title") or doc.id, "chunk_index": n}
            out.append(Passage(piece, id=f"{doc.id}#{n}", metadata=meta))
    if empty:
        logger.warning("chunk_passages: %d empty document(s) gave no chunk: %s", len(empty), empty[:_SHOW_IDS])
    return out
