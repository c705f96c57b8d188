"""Grounding: which titles and genres an explanation names, and whether the data backs them.

A :class:`Catalogue` finds title mentions in three ways:

* **scan** — the catalogue's own titles written out in the text ("The Lion King", with
  the article moved back to the front and the year optional), case-sensitive. Titles of
  the user's history and the target are looked for whatever their length; other
  catalogue titles only when they have two or more words, so a common word that happens
  to be a one-word title is not taken for a mention;
* **year** — a capitalised run of words right before a year in brackets ("... Toy Story
  (1995)"), matched to the catalogue (exactly, then fuzzily) or reported as unknown;
* **quote** — a short quoted span that starts with a capital ("“Midnight Garden”"),
  matched the same way; quoted preference sentences (the template quotes them) and
  genre words are not titles.

A mention is *grounded* when it is the target or in the user's history; anything else
(another catalogue title or no title at all) is an *invented* title. Genre words
("comedy", "science fiction", ...) are claims; a claim is *unsupported* when neither the
target nor any history item carries that genre.

The claim verifier (:mod:`whyrec.explain.verify`) and the explanation-quality harness
(:mod:`whyrec.evaluate.explanations`) both use it; it lives with the explainer so that
the harness looks down at it, never the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from rapidfuzz import fuzz, process

from whyrec.data.facts import genre_pattern
from whyrec.explain.textutil import STOPWORDS, split_tags, stem

_ARTICLE_TAIL = re.compile(
    r"^(?P<body>.+?),\s*(?P<art>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El|Los|Las|Un|Une)$",
    re.IGNORECASE,
)
_PARENS = re.compile(r"\s*\([^()]*\)")
_YEAR = re.compile(r"\((1[89]\d\d|20\d\d)\)")
_YEAR_AFTER = re.compile(r"\s*\((1[89]\d\d|20\d\d)\)")
_KEY_WORD = re.compile(r"\w+", re.UNICODE)
_LEADING_ARTICLES = {"the", "a", "an", "les", "la", "le", "l", "il", "das", "der", "die", "el"}
_CONNECTORS = {
    "of", "the", "and", "a", "an", "in", "on", "to", "with", "for", "from", "at", "de",
    "la", "le", "du", "des", "et", "vs", "vs.", "&", "or", "is", "my", "your", "our",
}  # fmt: skip
_QUOTES = (
    re.compile(r"“([^”\n]{2,120})”"),
    re.compile(r'"([^"\n]{2,120})"'),
    re.compile(r"‘([^’\n]{2,120})’"),
    re.compile(r"(?<![\w])'([^'\n]{2,80})'(?![\w])"),
    re.compile(r"\*([^*\n]{2,80})\*"),
)
_MAX_TITLE_WORDS = 10
FUZZY_CUTOFF = 88.0


def _article_first(text: str) -> str | None:
    """``"Lion King, The"`` → ``"The Lion King"``; None when no article ends ``text``."""
    m = _ARTICLE_TAIL.match(text)
    if not m or not m.group("body").strip():
        return None
    art = m.group("art")
    return f"{art}{'' if art.endswith(chr(39)) else ' '}{m.group('body').strip()}"


def display_title(title: str) -> str:
    """``"Lion King, The (1994)"`` → ``"The Lion King"``: brackets dropped, article in front."""
    body = _PARENS.sub("", str(title)).strip() or str(title).strip()
    return _article_first(body) or body


def _split_trailing_brackets(text: str) -> tuple[str, str]:
    """``"Boot, Das (Das Boot) (1981)"`` → ``("Boot, Das", " (Das Boot) (1981)")``: the
    bracket groups at the end (no nesting) apart from what comes before them. A scan from
    the right, linear in the length (a regex for it backtracks quadratically)."""
    cut = len(text)
    head = text.rstrip()
    while head.endswith(")"):
        start = head.rfind("(")
        if start < 0 or "(" in head[start + 1 : -1] or ")" in head[start + 1 : -1]:
            break
        cut = len(head[:start].rstrip())
        head = head[:cut]
    return text[:cut], text[cut:]


def spoken_title(title: str) -> str:
    """How a reason names an item: a catalogue's trailing article moved to the front and
    everything else kept — ``"Devil's Own, The (1997)"`` → ``"The Devil's Own (1997)"``,
    ``"Flower of My Secret, The (Flor de mi secreto, La) (1995)"`` → ``"The Flower of My
    Secret (Flor de mi secreto, La) (1995)"``. Other titles are returned unchanged."""
    text = str(title)
    head, tail = _split_trailing_brackets(text)
    moved = _article_first(head.strip())
    return moved + tail if moved is not None else text


def title_key(title: str) -> str:
    """Matching key: display form, lower case, words only (plurals stemmed), without a
    leading article — "Lion King, The (1994)", "The Lion King" and "lion kings" agree."""
    ws = _KEY_WORD.findall(display_title(title).lower())
    if len(ws) > 1 and ws[0] in _LEADING_ARTICLES:
        ws = ws[1:]
    return " ".join(stem(w) for w in ws)


def title_year(title: str) -> str | None:
    """The last bracketed year of a title, if any."""
    years = _YEAR.findall(str(title))
    return years[-1] if years else None


def _words_pattern(words_: list[str]) -> str:
    return r"\W+".join(re.escape(w) for w in words_)


def _scan_pattern(title: str) -> str | None:
    """Regex source for a title written out in prose: "The Lion King", "Lion King" or the
    catalogue's own "Lion King, The"."""
    disp = display_title(title)
    ws = _KEY_WORD.findall(disp)
    if not ws:
        return None
    lead = ""
    raw = ""
    if len(ws) > 1 and ws[0].lower() in _LEADING_ARTICLES:
        lead = rf"(?:{re.escape(ws[0])}\W+)?"
        raw = _words_pattern([*ws[1:], ws[0]]) + "|"  # "Lion King, The"
        ws = ws[1:]
    return r"(?<!\w)(?:" + raw + lead + _words_pattern(ws) + r")(?!\w)"


@dataclass(frozen=True)
class TitleMention:
    """A title named in an explanation and what it refers to."""

    text: str  # the words as written
    item: int | None  # matched catalogue item (None: no such title)
    status: str  # "target" | "history" | "catalogue" | "unknown"
    how: str  # "scan" | "year" | "quote"
    start: int
    end: int

    @property
    def grounded(self) -> bool:
        return self.status in ("target", "history")

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "item": self.item, "status": self.status, "how": self.how}


@dataclass
class Grounding:
    """Title mentions and genre claims of one explanation."""

    mentions: list[TitleMention]
    genres: list[str]
    unsupported_genres: list[str]

    @property
    def invented(self) -> list[TitleMention]:
        return [m for m in self.mentions if not m.grounded]

    @property
    def grounded(self) -> list[TitleMention]:
        return [m for m in self.mentions if m.grounded]

    def metrics(self) -> dict[str, float | None]:
        n_inv, n_ok = len(self.invented), len(self.grounded)
        return {
            "invented_titles": float(n_inv),
            "has_invented_title": float(n_inv > 0),
            "grounded_titles": float(n_ok),
            "title_grounding": n_ok / (n_ok + n_inv) if n_ok + n_inv else None,
            "unsupported_genres": float(len(self.unsupported_genres)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mentions": [m.to_dict() for m in self.mentions],
            "genres": self.genres,
            "unsupported_genres": self.unsupported_genres,
        }


@dataclass
class _Mentions:
    """The title mentions found so far in one text, and the spans they take."""

    text: str
    status: Callable[[int | None], str]
    found: list[TitleMention] = field(default_factory=list)
    taken: list[tuple[int, int]] = field(default_factory=list)

    def overlaps(self, a: int, b: int) -> bool:
        return any(a < e and s < b for s, e in self.taken)

    def add(self, span: str, item: int | None, how: str, a: int, b: int) -> None:
        self.found.append(TitleMention(span.strip(), item, self.status(item), how, a, b))
        self.taken.append((a, b))


class Catalogue:
    """Item titles (and optional genre/category strings) to ground explanations against."""

    def __init__(self, titles: Sequence[str], tags: Sequence[str] | None = None) -> None:
        self.titles = [str(t) for t in titles]
        self.tags = [str(t) for t in tags] if tags is not None else [""] * len(self.titles)
        if len(self.tags) != len(self.titles):
            raise ValueError(f"{len(self.tags)} tag strings for {len(self.titles)} titles")
        self.keys = [title_key(t) for t in self.titles]
        self.years = [title_year(t) for t in self.titles]
        self._by_key: dict[str, list[int]] = {}
        for i, k in enumerate(self.keys):
            if k:
                self._by_key.setdefault(k, []).append(i)

    @classmethod
    def from_dataset(cls, dataset: Any, field: str | None = None) -> Catalogue:
        """Titles plus ``field`` (default: ``genres``, else the first text field)."""
        fields = list(getattr(dataset, "text_fields", []))
        name = field or ("genres" if "genres" in fields else (fields[0] if fields else None))
        tags = dataset.items[name].fillna("").astype(str).tolist() if name else None
        return cls(dataset.titles, tags)

    def to_dict(self) -> dict[str, Any]:
        return {"titles": self.titles, "tags": self.tags}

    # ------------------------------------------------------------- matching
    @cached_property
    def _scan_regex(self) -> re.Pattern[str] | None:
        """All catalogue titles of two or more words, longest first."""
        pats = []
        for i, t in enumerate(self.titles):
            if len(self.keys[i].split()) >= 2:
                p = _scan_pattern(t)
                if p:
                    pats.append((len(display_title(t)), i, p))
        pats = list({p: (n, i, p) for n, i, p in pats}.values())
        if not pats:
            return None
        pats.sort(key=lambda x: -x[0])
        return re.compile("|".join(p for _, _, p in pats))

    def match(self, text: str, year: str | None = None) -> int | None:
        """The catalogue item ``text`` names: exact key first, then fuzzy; None if none."""
        key = title_key(text)
        if not key:
            return None
        hits = self._by_key.get(key)
        if hits is None and len(key) >= 6:
            found = process.extractOne(
                key, self._by_key.keys(), scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF
            )
            hits = self._by_key[found[0]] if found else None
        if not hits:
            return None
        if year is not None:
            same = [i for i in hits if self.years[i] == year]
            if same:
                return same[0]
        return hits[0]

    def find_titles(
        self,
        text: str,
        *,
        target: int | None = None,
        history: Iterable[int] = (),
        preferences: Sequence[str] = (),
    ) -> list[TitleMention]:
        """Every title mention in ``text``, classified against ``target`` and ``history``."""
        hist = {int(h) for h in history}
        allowed = hist | ({int(target)} if target is not None else set())
        mentions = _Mentions(text, self._classifier(target, hist))
        self._scan_titles(mentions, allowed)
        self._dated_runs(mentions)
        self._quoted_titles(mentions, preferences)
        mentions.found.sort(key=lambda x: x.start)
        return mentions.found

    def _classifier(self, target: int | None, hist: set[int]) -> Callable[[int | None], str]:
        """The status of a matched item: target, history, catalogue (or unknown); another
        catalogue entry of the same film (same title and year) counts as that film."""

        def same_title(a: int, b: int) -> bool:
            """Two catalogue entries of one film (same title and year, different ids)."""
            return bool(self.keys[a]) and (self.keys[a], self.years[a]) == (
                self.keys[b],
                self.years[b],
            )

        hist_by_key: dict[str, list[int]] = {}
        for h in hist:
            hist_by_key.setdefault(self.keys[h], []).append(h)

        def status(item: int | None) -> str:
            if item is None:
                return "unknown"
            if target is not None and (item == target or same_title(item, int(target))):
                return "target"
            if item in hist or any(
                same_title(item, h) for h in hist_by_key.get(self.keys[item], [])
            ):
                return "history"
            return "catalogue"

        return status

    def _scan_titles(self, mentions: _Mentions, allowed: set[int]) -> None:
        """Pass 1: allowed titles written out (any length), then other multi-word titles."""
        text = mentions.text
        allowed_pats = []
        for i in sorted(allowed, key=lambda i: -len(display_title(self.titles[i]))):
            key = self.keys[i]
            if key and (len(key.split()) >= 2 or len(key) >= 4):
                p = _scan_pattern(self.titles[i])
                if p:
                    allowed_pats.append((i, p))

        def add_scan(span: str, item: int | None, a: int, b: int) -> None:
            # "Hamlet (1990)": a year right after the title decides between namesakes
            y = _YEAR_AFTER.match(text, b)
            if y is not None:
                dated = self.match(span, y.group(1))
                if dated is not None:
                    item, b = dated, y.end()
                    span = text[a:b]
                    if self.years[dated] and self.years[dated] != y.group(1):
                        item = None  # "Sleeper (1990)" for Sleeper (1973): no such film
            mentions.add(span, item, "scan", a, b)

        for i, p in allowed_pats:
            for m in re.finditer(p, text):
                if not mentions.overlaps(m.start(), m.end()):
                    add_scan(m.group(0), i, m.start(), m.end())
        if self._scan_regex is not None:
            for m in self._scan_regex.finditer(text):
                if mentions.overlaps(m.start(), m.end()):
                    continue
                add_scan(m.group(0), self.match(m.group(0)), m.start(), m.end())

    def _dated_runs(self, mentions: _Mentions) -> None:
        """Pass 2: capitalised runs before "(YYYY)"."""
        text = mentions.text
        for m in _YEAR.finditer(text):
            end = m.start()
            # the run may begin with a title found already: keep only what follows it
            starts = [a for a in _run_before(text, end) if not mentions.overlaps(a, end)]
            if not starts:
                continue
            item, a = self._match_suffix(text, starts, end, m.group(1))
            if item is None:
                a = _skip_small_words(text, starts, end)
            span = " ".join(text[a:end].split()) + f" ({m.group(1)})"
            mentions.add(span, item, "year", a, m.end())

    def _quoted_titles(self, mentions: _Mentions, preferences: Sequence[str]) -> None:
        """Pass 3: short quoted spans that look like titles."""
        pref_keys = [p for p in preferences if p]
        for rx in _QUOTES:
            for m in rx.finditer(mentions.text):
                inner = m.group(1).strip()
                a, b = m.start(1), m.end(1)
                if mentions.overlaps(a, b) or not inner:
                    continue
                year = title_year(inner)
                item = self.match(inner, year)
                if item is not None:
                    mentions.add(inner, item, "quote", a, b)
                    continue
                if not _title_like(inner):
                    continue
                if pref_keys and process.extractOne(
                    inner, pref_keys, scorer=fuzz.token_set_ratio, score_cutoff=85
                ):
                    continue  # a quoted preference sentence, not a title
                if self.genre_of_word(inner) is not None:
                    continue
                mentions.add(inner, None, "quote", a, b)

    def _match_suffix(
        self, text: str, starts: list[int], end: int, year: str
    ) -> tuple[int | None, int]:
        """The longest trailing part of the run ``text[starts[0]:end]`` that names a
        catalogue title, as (item, start offset); (None, starts[0]) if none does."""
        for a in starts:
            words_ = text[a:end].split()
            if words_[0].strip(",:;").lower() in _CONNECTORS and len(words_) > 1:
                continue
            item = self.match(text[a:end].strip(" ,;:"), year)
            if item is not None:
                return item, a
        return None, starts[0]

    # --------------------------------------------------------------- genres
    @cached_property
    def vocabulary(self) -> dict[str, re.Pattern[str]]:
        """Genre tag → a case-insensitive pattern of its surface forms (the same forms the
        item facts read tastes with: :func:`whyrec.data.facts.genre_pattern`)."""
        return {tag: genre_pattern(tag) for tag in sorted(split_tags(self.tags))}

    def genre_of_word(self, text: str) -> str | None:
        """The genre tag ``text`` is (a surface form of), or None."""
        t = text.strip()
        for tag, rx in self.vocabulary.items():
            m = rx.fullmatch(t)
            if m:
                return tag
        return None

    def genre_claims(self, text: str, skip: Sequence[tuple[int, int]] = ()) -> list[str]:
        """Genre tags mentioned in ``text`` outside the ``skip`` spans (title mentions)."""
        chars = list(text)
        for a, b in skip:
            chars[a:b] = " " * (b - a)
        clean = "".join(chars)
        return [tag for tag, rx in self.vocabulary.items() if rx.search(clean)]

    def tags_of(self, items: Iterable[int]) -> set[str]:
        return split_tags(self.tags[int(i)] for i in items)

    # -------------------------------------------------------------- grounding
    def ground(
        self,
        text: str,
        *,
        target: int,
        history: Sequence[int],
        preferences: Sequence[str] = (),
    ) -> Grounding:
        """Title mentions and genre claims of ``text`` checked against the data."""
        mentions = self.find_titles(text, target=target, history=history, preferences=preferences)
        # a title is checked as a title, and a taste quoted word for word is the user's
        # preference (checked when it was extracted), not a claim about the item
        skip = [(m.start, m.end) for m in mentions]
        skip += [(a, b) for a, b, _ in quoted_spans(text, preferences)]
        genres = self.genre_claims(text, skip)
        supported = self.tags_of([target, *history])
        return Grounding(
            mentions=mentions,
            genres=genres,
            unsupported_genres=[g for g in genres if g not in supported],
        )


def quoted_spans(text: str, preferences: Sequence[str]) -> list[tuple[int, int, int]]:
    """``(start, end, index)`` of each preference ``text`` quotes word for word
    (case-insensitive, without its final full stop), or up to an ellipsis where it was
    cut short ("… with a focus…"). Where two preferences match overlapping text (they
    can open alike: "The user's history is replete with …") the longer match wins."""
    low = text.lower()
    found: list[tuple[int, int, int]] = []
    for j, p in enumerate(preferences):
        full = str(p).rstrip(". ").lower()
        key = full[:40]
        if len(key) < 8:
            continue
        at = low.find(key)
        while at >= 0:
            n = len(key)
            while n < len(full) and at + n < len(low) and low[at + n] == full[n]:
                n += 1
            if n == len(full):
                found.append((at, at + n, j))
                break
            if low.startswith("…", at + n) or low.startswith("...", at + n):
                found.append((at, at + n + (1 if low[at + n] == "…" else 3), j))
                break
            at = low.find(key, at + 1)
    out: list[tuple[int, int, int]] = []
    for span in sorted(found, key=lambda s: s[0] - s[1]):  # longest first
        if all(span[1] <= a or span[0] >= b for a, b, _ in out):
            out.append(span)
    return sorted(out)


_OPEN_QUOTES = "\"“‘'«"


def _run_before(text: str, end: int) -> list[int]:
    """Start offsets of the words of the title-like run ending at ``end`` (first = the
    whole run). An opening quote mark starts the run; a closing one ends the search."""
    head = text[:end].rstrip()
    tokens = list(re.finditer(r"\S+", head))
    run: list[int] = []
    for tok in reversed(tokens):
        w = tok.group(0)
        if len(run) >= 12 or any(c in w for c in "()[]”»"):
            break
        opening = w[0] in _OPEN_QUOTES
        core = w.lstrip(_OPEN_QUOTES).strip(",:;'’‘")
        if not core or any(c in core for c in '"“'):
            break
        if run and w[-1] in ".!?" and core.lower() not in ("mr.", "mrs.", "dr.", "st.", "jr."):
            break  # the previous sentence ended here
        if not (core[0].isupper() or core[0].isdigit() or core.lower() in _CONNECTORS):
            break
        run.append(tok.start() + (len(w) - len(w.lstrip(_OPEN_QUOTES))))
        if opening:
            break
    run.reverse()
    return run


def _skip_small_words(text: str, starts: list[int], end: int) -> int:
    """Offset of the run without its leading connectors ("and", "of", ...)."""
    for a in starts[:-1]:
        if text[a:end].split()[0].strip(",:;").lower() not in _CONNECTORS:
            return a
    return starts[-1]


def _title_like(span: str) -> bool:
    ws = span.split()
    if not ws or len(ws) > _MAX_TITLE_WORDS:
        return False
    if not (span[0].isupper() or span[0].isdigit()):
        return False
    return not all(w.lower().strip(".,!?") in STOPWORDS for w in ws)
