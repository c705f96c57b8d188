"""Synthetic interaction logs with the shape of real ones, at any size, from a seed.

:func:`synthesize` writes the two files of the generic table layout that
``whyrec data prepare --format table`` already reads (no new loading code path):

``interactions.parquet``
    ``user_id`` (int32), ``item_id`` (int32), ``timestamp`` (int64 Unix seconds, strictly
    increasing per user), ``rating`` (int8, 1-5); grouped by user, in time order.
``items.parquet``
    ``item_id`` (int32), ``title`` (e.g. "The Drowned Lighthouse (1987)"), ``genres``
    (the item's categories, "Mystery, Crime").
``synth.json``
    the parameters, the counts and the ``whyrec data prepare`` command for the directory.

How the data is made (each property is tested in ``tests/data/test_synth.py``):

* **Popularity** is Zipf-like: item ``i`` has weight ``rank_i ** -popularity_exponent``
  over a random ranking; every draw by popularity uses these weights.
* **Activity** has a long tail: each user has ``min_per_user`` interactions plus a
  share of the rest proportional to a lognormal draw (``activity_sigma``), capped at
  ``max_user_share`` of the catalogue; the lengths add up to exactly ``interactions``.
* **Tastes**: items are grouped into latent tastes, each tied to one to three
  categories (so an item's categories, and the words of its title, tell its taste).
  A user follows a few tastes (more for heavier users) and moves among them as a
  Markov chain: stay with probability ``stickiness``, otherwise jump to one of their
  tastes by personal weight. Within a taste, the next item is, with probability
  ``successor_prob``, one of the previous item's few likely successors (weights
  halving: 4/7, 2/7, 1/7 for three), else an item of the taste drawn by popularity.
  With probability ``explore`` an item comes from the whole catalogue by popularity.
  Order therefore matters: a sequence model can learn both the current taste and the
  item-to-item successions, which popularity cannot.
* **No repeats**: a user meets an item at most once (one rating per user and item, as
  in MovieLens); an item already met is skipped and the chain draws again, widening to
  catalogue popularity after 3 misses in a row and to a uniform draw after 12.
* **Titles** combine an adjective and a noun from the vocabularies of the item's
  categories with a year, so a text encoder reads the taste from the title.

Generation is vectorised with NumPy over all users of a chunk at once and written in
Parquet row groups chunk by chunk: memory holds one chunk's interactions plus a bitset
of (user, item) pairs of 64 MiB at most, whatever the total size. The same arguments
give byte-identical files; another seed gives other data.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import ConfigError, DataError

INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
INFO_FILE = "synth.json"
SYNTH_FORMAT = 1

# Stream numbers of the per-purpose random generators: each part of the data draws
# from its own stream, so changing how one part is drawn leaves the others alone.
_CATALOGUE, _USERS, _TITLES, _CHUNK = 1, 2, 3, 4

#: Bytes of the per-chunk (user, item) bitset; sets how many users share one chunk.
BITSET_BYTES = 64 << 20
_MAX_CHUNK_USERS = 50_000
_MISSES_BEFORE_POPULAR = 3
_MISSES_BEFORE_UNIFORM = 12
_START = 1_104_537_600  # 2005-01-01T00:00:00Z
_START_SPAN = 10 * 365 * 86_400  # users join over ten years

#: Categories and the words their titles are made of (adjectives, nouns).
VOCABULARY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Mystery": (
        ("Hidden", "Missing", "Locked", "Vanishing", "Unseen", "Crooked", "Veiled", "Twelfth"),
        ("Harbor", "Key", "Manor", "Clue", "Alibi", "Cipher", "Staircase", "Lantern"),
    ),
    "Romance": (
        ("Tender", "Moonlit", "Endless", "Faithful", "Blushing", "Summer", "Gentle", "Sweet"),
        ("Heart", "Kiss", "Promise", "Wedding", "Valentine", "Rose", "Embrace", "Serenade"),
    ),
    "Science Fiction": (
        ("Quantum", "Synthetic", "Orbital", "Binary", "Cybernetic", "Infinite", "Neural", "Ion"),
        ("Android", "Reactor", "Signal", "Colony", "Protocol", "Singularity", "Drone", "Clone"),
    ),
    "Western": (
        ("Dusty", "Lawless", "Rawhide", "Sundown", "Outlaw", "Frontier", "Lone", "Branded"),
        ("Canyon", "Saddle", "Sheriff", "Ranch", "Stagecoach", "Mesa", "Gunslinger", "Corral"),
    ),
    "War": (
        ("Fallen", "Burning", "Last", "Iron", "Brave", "Distant", "Bloody", "Silent"),
        ("Trench", "Battalion", "Front", "Regiment", "Beachhead", "Bunker", "Convoy", "Medal"),
    ),
    "Horror": (
        ("Haunted", "Cursed", "Rotting", "Shrieking", "Hollow", "Pale", "Bleeding", "Howling"),
        ("Crypt", "Ghoul", "Asylum", "Coffin", "Skull", "Séance", "Cellar", "Scarecrow"),
    ),
    "Comedy": (
        ("Silly", "Awkward", "Clumsy", "Goofy", "Cheeky", "Wacky", "Lucky", "Nutty"),
        ("Roommate", "Pickle", "Mixup", "Honeymoon", "Prank", "Bachelor", "Banana", "Sitcom"),
    ),
    "Animation": (
        ("Tiny", "Magic", "Cuddly", "Bouncing", "Painted", "Toy", "Fuzzy", "Sparkly"),
        ("Bunny", "Robot", "Puppy", "Kingdom", "Penguin", "Balloon", "Dragonling", "Teapot"),
    ),
    "Documentary": (
        ("True", "Untold", "Real", "Inside", "Unfiltered", "Candid", "Everyday", "Factual"),
        (
            "Story",
            "Record",
            "Archive",
            "Interview",
            "Investigation",
            "Portrait",
            "Chronicle",
            "Testimony",
        ),
    ),  # fmt: skip
    "Fantasy": (
        ("Enchanted", "Elven", "Sorcerous", "Mythic", "Crystal", "Ancient", "Runed", "Fabled"),
        ("Wizard", "Dragon", "Amulet", "Realm", "Throne", "Sword", "Prophecy", "Griffin"),
    ),
    "Crime": (
        ("Dirty", "Crooked", "Undercover", "Stolen", "Midnight", "Corrupt", "Ruthless", "Fast"),
        ("Heist", "Gangster", "Detective", "Syndicate", "Getaway", "Mobster", "Ransom", "Cartel"),
    ),
    "Musical": (
        ("Singing", "Dancing", "Jazzy", "Rhythmic", "Melodic", "Swinging", "Harmonic", "Tuneful"),
        ("Ballad", "Chorus", "Ballroom", "Encore", "Overture", "Showstopper", "Tango", "Waltz"),
    ),
    "Adventure": (
        ("Lost", "Daring", "Uncharted", "Wild", "Perilous", "Sunken", "Forbidden", "Restless"),
        ("Treasure", "Expedition", "Jungle", "Island", "Voyage", "Temple", "Compass", "Map"),
    ),
    "Sports": (
        ("Winning", "Underdog", "Final", "Golden", "Racing", "Fighting", "Rookie", "Varsity"),
        ("Season", "Champion", "Stadium", "Playoff", "Knockout", "Marathon", "Coach", "Pitch"),
    ),
    "History": (
        ("Imperial", "Medieval", "Victorian", "Royal", "Forgotten", "Roman", "Tudor", "Old"),
        ("Empire", "Dynasty", "Crown", "Revolution", "Pharaoh", "Cathedral", "Treaty", "Queen"),
    ),
    "Thriller": (
        ("Deadly", "Dark", "Sleepless", "Breaking", "Sudden", "Final", "Frozen", "Hunted"),
        (
            "Conspiracy",
            "Hostage",
            "Deadline",
            "Informant",
            "Target",
            "Countdown",
            "Stranger",
            "Pursuit",
        ),
    ),  # fmt: skip
    "Family": (
        ("Happy", "Little", "Grand", "Homemade", "Holiday", "Best", "Neighborly", "Snowy"),
        ("Family", "Grandpa", "Sleepover", "Treehouse", "Pony", "Picnic", "Christmas", "Twins"),
    ),
    "Drama": (
        ("Broken", "Quiet", "Bitter", "Fragile", "Distant", "Long", "Restless", "Unspoken"),
        ("Daughter", "Funeral", "Winter", "Confession", "Reunion", "Widow", "Mother", "Harvest"),
    ),
    "Nature": (
        ("Wild", "Frozen", "Blue", "Green", "Migrating", "Deep", "Living", "Northern"),
        ("Ocean", "Glacier", "Forest", "Savanna", "Reef", "Wolf", "Rainforest", "Eagle"),
    ),
    "Noir": (
        ("Smoky", "Rainy", "Shadowy", "Neon", "Fatal", "Cold", "Doomed", "Nameless"),
        (
            "Dame",
            "Alley",
            "Gumshoe",
            "Nightclub",
            "Double-Cross",
            "Cigarette",
            "Precinct",
            "Fedora",
        ),
    ),  # fmt: skip
}
CATEGORIES = tuple(VOCABULARY)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator beyond the sizes; the defaults are what the tests check.

    ``n_tastes`` 0 means ``sqrt(items) / 2`` clipped to 4..100 (82 for 27k items).
    """

    n_tastes: int = 0
    max_tastes_per_user: int = 5
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.0
    min_per_user: int = 5
    max_user_share: float = 0.5
    stickiness: float = 0.85
    successor_prob: float = 0.4
    n_successors: int = 3
    explore: float = 0.05

    def check(self) -> None:
        """Raise a ConfigError naming the first setting out of its range."""
        rules: list[tuple[str, bool, str]] = [
            ("n_tastes", self.n_tastes >= 0, "0 (automatic) or a positive count"),
            ("max_tastes_per_user", self.max_tastes_per_user >= 1, "at least 1"),
            ("popularity_exponent", 0.0 <= self.popularity_exponent <= 3.0, "in [0, 3]"),
            ("activity_sigma", 0.0 <= self.activity_sigma <= 3.0, "in [0, 3]"),
            ("min_per_user", self.min_per_user >= 1, "at least 1"),
            ("max_user_share", 0.0 < self.max_user_share <= 0.9, "in (0, 0.9]"),
            ("stickiness", 0.0 <= self.stickiness <= 1.0, "in [0, 1]"),
            ("successor_prob", 0.0 <= self.successor_prob <= 1.0, "in [0, 1]"),
            ("n_successors", 1 <= self.n_successors <= 16, "in 1..16"),
            ("explore", 0.0 <= self.explore <= 1.0, "in [0, 1]"),
        ]
        for name, ok, expected in rules:
            if not ok:
                raise ConfigError(
                    f"synthetic data setting {name}={getattr(self, name)!r}: expected {expected}"
                )


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote."""

    directory: Path
    interactions: Path
    items: Path
    info: Path
    counts: dict[str, int] = field(default_factory=dict)

    def prepare_args(self, out: str | Path) -> list[str]:
        """``whyrec data prepare`` arguments that turn this directory into a dataset."""
        return prepare_args(self.directory, out)


def prepare_args(directory: str | Path, out: str | Path) -> list[str]:
    """Arguments of ``whyrec data prepare`` for a synthetic directory (after ``whyrec``)."""
    d = Path(directory)
    return [
        "data", "prepare", str(d / INTERACTIONS_FILE), "--format", "table",
        "--items", str(d / ITEMS_FILE), "--rating-col", "rating", "--text-col", "genres",
        "--name", d.name, "--out", str(out),
    ]  # fmt: skip


def load_synthetic(directory: str | Path) -> Any:
    """The synthetic directory as :class:`~whyrec.data.RawData`, read by the table loader
    exactly as ``whyrec data prepare`` reads it."""
    from whyrec.data.loaders.generic import load_table

    d = Path(directory)
    if not (d / INTERACTIONS_FILE).is_file():
        raise DataError(
            f"no {INTERACTIONS_FILE} here; expected a directory written by whyrec data synth",
            path=d,
        )
    return load_table(
        d / INTERACTIONS_FILE, d / ITEMS_FILE, rating_col="rating", text_cols=["genres"]
    )


# ------------------------------------------------------------------------ sizes


def _check_sizes(users: int, items: int, interactions: int, config: SynthConfig) -> int:
    """Validate the sizes; returns the per-user cap on interactions."""
    for name, value in (("users", users), ("items", items), ("interactions", interactions)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"synthetic data: --{name} must be a positive integer, got {value!r}")
    if users > 2**31 - 2 or items > 2**31 - 2:
        raise ConfigError("synthetic data: --users and --items must each be below 2**31")
    if items < 2 * config.min_per_user:
        raise ConfigError(
            f"synthetic data: --items {items} is too small; expected at least "
            f"{2 * config.min_per_user} (twice the minimum per user)"
        )
    cap = max(config.min_per_user, int(items * config.max_user_share))
    low, high = users * config.min_per_user, users * cap
    if not low <= interactions <= high:
        raise ConfigError(
            f"synthetic data: --interactions {interactions:,} is outside {low:,}..{high:,}: "
            f"each of the {users:,} users needs {config.min_per_user} to {cap:,} interactions "
            f"(at most {config.max_user_share:.0%} of the {items:,} items, none repeated)"
        )
    return cap


def user_lengths(
    users: int, interactions: int, cap: int, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """Interactions per user: ``min_per_user`` plus a lognormal share of the rest, capped
    at ``cap``, summing to exactly ``interactions`` (int64)."""
    base = config.min_per_user
    extra_total = interactions - users * base
    weight = rng.lognormal(0.0, config.activity_sigma, users)
    extra = np.zeros(users, dtype=np.float64)
    free = np.ones(users, dtype=bool)
    remaining = float(extra_total)
    room = float(cap - base)
    while remaining > 0 and free.any():  # water-filling: users at the cap pass on the rest
        share = np.zeros(users)
        share[free] = weight[free] / weight[free].sum() * remaining
        over = free & (share >= room)
        if not over.any():
            extra[free] = share[free]
            break
        extra[over] = room
        free &= ~over
        remaining = extra_total - extra.sum()
    whole = np.floor(extra).astype(np.int64)
    missing = int(extra_total - whole.sum())
    if missing > 0:  # largest fractional parts first; ties by user index
        order = np.argsort(-(extra - whole), kind="stable")
        order = order[whole[order] < cap - base][:missing]
        whole[order] += 1
    elif missing < 0:  # float rounding overshot: take from the heaviest users
        order = np.argsort(-whole, kind="stable")[:-missing]
        whole[order] -= 1
    return base + whole


# -------------------------------------------------------------------- catalogue


@dataclass
class _Catalogue:
    taste_of: np.ndarray  # (M,) taste of each item
    weight: np.ndarray  # (M,) popularity weight
    taste_key: np.ndarray  # (M,) taste + cumulative share within the taste, sorted
    taste_items: np.ndarray  # (M,) items in taste_key order
    taste_mass: np.ndarray  # (T,) total weight of each taste
    global_cum: np.ndarray  # (M,) cumulative popularity share
    successors: np.ndarray  # (M, S) likely next items
    succ_cum: np.ndarray  # (S,) cumulative successor weights
    categories: list[list[int]]  # per item
    quality: np.ndarray  # (M,) rating offset

    def by_taste(self, tastes: np.ndarray, r: np.ndarray) -> np.ndarray:
        """One item per row from taste ``tastes[i]`` by popularity (``r`` uniform [0,1))."""
        pos = np.searchsorted(self.taste_key, tastes + r, side="right")
        return self.taste_items[np.minimum(pos, len(self.taste_items) - 1)]

    def by_popularity(self, r: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.global_cum, r, side="right")
        return np.minimum(pos, len(self.global_cum) - 1)


def _n_tastes(items: int, config: SynthConfig) -> int:
    n = config.n_tastes or int(np.clip(round(np.sqrt(items) / 2), 4, 100))
    return max(1, min(n, items // 2))


def _catalogue(items: int, config: SynthConfig, rng: np.random.Generator) -> _Catalogue:
    n_tastes = _n_tastes(items, config)
    n_cat = len(CATEGORIES)
    # each taste: a primary category (cycling through all of them first) and 0-2 more
    taste_cats: list[list[int]] = []
    for t in range(n_tastes):
        primary = t % n_cat if t < n_cat else int(rng.integers(n_cat))
        n_more = int(rng.choice(3, p=[0.3, 0.5, 0.2]))
        others = [int(c) for c in rng.permutation(n_cat) if c != primary][:n_more]
        taste_cats.append([primary, *others])
    # taste sizes vary (Zipf 0.7); every taste gets at least one item
    size_w = (1.0 + rng.permutation(n_tastes)) ** -0.7
    taste_of = np.concatenate(
        [np.arange(n_tastes), rng.choice(n_tastes, items - n_tastes, p=size_w / size_w.sum())]
    )
    taste_of = rng.permutation(taste_of).astype(np.int64)
    weight = (1.0 + rng.permutation(items)) ** -config.popularity_exponent

    order = np.lexsort((np.arange(items), taste_of))  # by taste, then item id
    w_sorted = weight[order]
    t_sorted = taste_of[order]
    mass = np.bincount(taste_of, weights=weight, minlength=n_tastes)
    cum = np.cumsum(w_sorted)
    start = np.searchsorted(t_sorted, np.arange(n_tastes))
    before = np.concatenate([[0.0], cum])[start]  # weight of all earlier tastes
    within = (cum - before[t_sorted]) / mass[t_sorted]
    is_last = np.r_[t_sorted[1:] != t_sorted[:-1], True]
    within[is_last] = 1.0
    taste_key = t_sorted + within
    global_cum = np.cumsum(weight) / weight.sum()
    global_cum[-1] = 1.0

    cat = _Catalogue(
        taste_of=taste_of,
        weight=weight,
        taste_key=taste_key,
        taste_items=order.astype(np.int64),
        taste_mass=mass,
        global_cum=global_cum,
        successors=np.empty((items, config.n_successors), dtype=np.int64),
        succ_cum=np.empty(0),
        categories=[],
        quality=rng.normal(0.0, 0.6, items),
    )
    # successors: drawn from the item's own taste by popularity, never the item itself
    succ = cat.by_taste(
        np.repeat(taste_of, config.n_successors),
        rng.random(items * config.n_successors),
    ).reshape(items, config.n_successors)
    self_loop = succ == np.arange(items)[:, None]
    succ[self_loop] = cat.by_popularity(rng.random(int(self_loop.sum())))
    cat.successors = succ
    sw = 0.5 ** np.arange(config.n_successors)
    cat.succ_cum = np.cumsum(sw) / sw.sum()
    cat.succ_cum[-1] = 1.0
    # item categories: one of the taste's, each other one of it with p=0.5, rarely a stray
    first = rng.integers(0, 3, items)
    coin = rng.random((items, 3))
    stray = np.where(rng.random(items) < 0.08, rng.integers(n_cat, size=items), -1)
    for i in range(items):
        tc = taste_cats[taste_of[i]]
        mine = {tc[first[i] % len(tc)]}
        mine.update(c for k, c in enumerate(tc) if coin[i, k] < 0.5)
        if stray[i] >= 0:
            mine.add(int(stray[i]))
        cat.categories.append(sorted(mine))
    return cat


def _titles(cat: _Catalogue, rng: np.random.Generator) -> list[str]:
    """Titles from the vocabulary of each item's categories, with a year."""
    n = len(cat.categories)
    pattern = rng.choice(4, n, p=[0.4, 0.25, 0.2, 0.15])
    picks = rng.integers(0, 1 << 30, (n, 5))
    year = 1950 + rng.integers(0, 70, n)
    out = []
    for i, cats in enumerate(cat.categories):
        c1 = CATEGORIES[cats[picks[i, 0] % len(cats)]]
        c2 = CATEGORIES[cats[picks[i, 1] % len(cats)]]
        adj = VOCABULARY[c1][0][picks[i, 2] % 8]
        noun = VOCABULARY[c2][1][picks[i, 3] % 8]
        noun2 = VOCABULARY[c1][1][picks[i, 4] % 8]
        p = pattern[i]
        if p == 0:
            text = f"The {adj} {noun}"
        elif p == 1:
            text = f"{adj} {noun}"
        elif p == 2:
            text = f"The {noun} of the {adj} {noun2}" if noun2 != noun else f"{adj} {noun}"
        else:
            text = f"{noun} and the {adj} {noun2}" if noun2 != noun else f"The {adj} {noun}"
        out.append(f"{text} ({year[i]})")
    return out


# ------------------------------------------------------------------------ users


def _user_tastes(
    lengths: np.ndarray, cat: _Catalogue, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(tastes (U, K) padded with -1, cumulative personal weights (U, K)) per user.

    Heavier users follow more tastes: 1 + log2(length / min_per_user), capped.
    """
    n_tastes = len(cat.taste_mass)
    kmax = min(config.max_tastes_per_user, n_tastes)
    k = np.clip(1 + np.floor(np.log2(lengths / config.min_per_user)), 1, kmax).astype(np.int64)
    tastes = np.full((len(lengths), kmax), -1, dtype=np.int64)
    logits = np.log(cat.taste_mass)
    step = max(1, (1 << 24) // n_tastes)
    for s in range(0, len(lengths), step):  # Gumbel top-k: tastes by mass, no repeats
        keys = logits - np.log(-np.log(rng.random((min(step, len(lengths) - s), n_tastes))))
        top = np.argsort(-keys, axis=1, kind="stable")[:, :kmax]
        tastes[s : s + step] = top
    slot = np.arange(kmax)[None, :]
    tastes[slot >= k[:, None]] = -1
    w = rng.gamma(1.0, 1.0, tastes.shape) + 1e-9
    w[tastes < 0] = 0.0
    cum = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
    cum[np.arange(len(k)), k - 1] = 1.0
    cum[slot >= k[:, None]] = 2.0  # never chosen
    return tastes, cum


def _chunk_sequences(
    lengths: np.ndarray,
    tastes: np.ndarray,
    taste_cum: np.ndarray,
    cat: _Catalogue,
    config: SynthConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Item sequences of one chunk of users, concatenated in user order (int32)."""
    n_users = len(lengths)
    n_items = len(cat.weight)
    row_bytes = (n_items + 7) // 8
    seen = np.zeros((n_users, row_bytes), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.empty(int(lengths.sum()), dtype=np.int32)
    count = np.zeros(n_users, dtype=np.int64)
    misses = np.zeros(n_users, dtype=np.int64)
    prev = np.full(n_users, -1, dtype=np.int64)
    slot = np.zeros(n_users, dtype=np.int64)
    active = np.arange(n_users)
    first = True
    while len(active):
        a = active
        n = len(a)
        # columns: 0 jump?, 1 which taste, 2 which item, 3 follow?, 4 which successor, 5 explore?
        r = rng.random((n, 6))
        # taste chain: the first step and a 1 - stickiness share jump (maybe to the same)
        jump = np.ones(n, dtype=bool) if first else r[:, 0] >= config.stickiness
        if jump.any():
            ja = a[jump]
            slot[ja] = (r[jump, 1][:, None] >= taste_cum[ja]).sum(1)
        item = cat.by_taste(tastes[a, slot[a]], r[:, 2])
        follow = (~jump) & (prev[a] >= 0) & (r[:, 3] < config.successor_prob)
        if follow.any():
            col = np.searchsorted(cat.succ_cum, r[follow, 4], side="right")
            item[follow] = cat.successors[prev[a[follow]], np.minimum(col, len(cat.succ_cum) - 1)]
        m = misses[a]
        wide = (r[:, 5] < config.explore) | (m >= _MISSES_BEFORE_POPULAR)
        if wide.any():
            item[wide] = cat.by_popularity(r[wide, 2])
        uniform = m >= _MISSES_BEFORE_UNIFORM
        if uniform.any():
            item[uniform] = np.minimum((r[uniform, 2] * n_items).astype(np.int64), n_items - 1)
        byte, bit = item >> 3, (item & 7).astype(np.uint8)
        new = ((seen[a, byte] >> bit) & 1) == 0
        acc = a[new]
        acc_item = item[new]
        seen[acc, byte[new]] |= np.left_shift(np.uint8(1), bit[new])
        out[offsets[acc] + count[acc]] = acc_item
        count[acc] += 1
        prev[acc] = acc_item
        misses[acc] = 0
        misses[a[~new]] += 1
        active = a[count[a] < lengths[a]]
        first = False
    return out


def _timestamps(
    user_of: np.ndarray, offsets: np.ndarray, start: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Strictly increasing times per user: a join time plus lognormal gaps (median ~1.5 h)."""
    gaps = 1 + np.floor(rng.lognormal(8.6, 1.6, len(user_of))).astype(np.int64)
    gaps = np.minimum(gaps, 30 * 86_400)
    total = np.cumsum(gaps)
    before = np.concatenate([[0], total])[offsets]  # gap sum of earlier users
    return start[user_of] + total - before[user_of]


# ---------------------------------------------------------------------- writing


def _write_interactions(
    path: Path,
    seed: int,
    items: int,
    lengths: np.ndarray,
    user_tastes: tuple[np.ndarray, np.ndarray],
    start: np.ndarray,
    user_bias: np.ndarray,
    cat: _Catalogue,
    config: SynthConfig,
) -> None:
    """The interactions Parquet file, written a chunk of users at a time, each chunk with
    its own seeded generator."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tastes, taste_cum = user_tastes
    users = len(lengths)
    row_bytes = (items + 7) // 8
    chunk = int(max(1, min(_MAX_CHUNK_USERS, BITSET_BYTES // row_bytes)))
    schema = pa.schema(
        [
            ("user_id", pa.int32()),
            ("item_id", pa.int32()),
            ("timestamp", pa.int64()),
            ("rating", pa.int8()),
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for number, lo in enumerate(range(0, users, chunk)):
            hi = min(users, lo + chunk)
            rng = np.random.default_rng([seed, _CHUNK, number])
            seq = _chunk_sequences(
                lengths[lo:hi], tastes[lo:hi], taste_cum[lo:hi], cat, config, rng
            )
            local = np.repeat(np.arange(hi - lo), lengths[lo:hi])
            offsets = np.concatenate([[0], np.cumsum(lengths[lo:hi])[:-1]])
            times = _timestamps(local, offsets, start[lo:hi], rng)
            noise = rng.normal(0.0, 0.8, len(seq))
            score = 3.6 + user_bias[lo:hi][local] + cat.quality[seq] + noise
            rating = np.clip(np.rint(score), 1, 5).astype(np.int8)
            table = pa.table(
                [
                    pa.array((local + lo + 1).astype(np.int32)),
                    pa.array(seq + 1),
                    pa.array(times),
                    pa.array(rating),
                ],
                schema=schema,
            )
            writer.write_table(table, row_group_size=1 << 20)


def _write_items(path: Path, items: int, cat: _Catalogue, titles: list[str]) -> None:
    """The items Parquet file: id, title and the genres as one text field."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    genres = [", ".join(CATEGORIES[c] for c in cs) for cs in cat.categories]
    item_table = pa.table(
        {
            "item_id": pa.array(np.arange(1, items + 1, dtype=np.int32)),
            "title": pa.array(titles, pa.string()),
            "genres": pa.array(genres, pa.string()),
        }
    )
    pq.write_table(item_table, path)


def _write_info(
    path: Path, target: Path, seed: int, counts: dict[str, int], tastes: int, config: SynthConfig
) -> None:
    """``synth.json``: what was generated, with which settings, and how to prepare it."""
    from whyrec import __version__

    info = {
        "format": SYNTH_FORMAT,
        "generator": f"whyrec {__version__} whyrec.data.synth",
        "seed": int(seed),
        **counts,
        "tastes": int(tastes),
        "config": asdict(config),
        "files": {"interactions": INTERACTIONS_FILE, "items": ITEMS_FILE},
        # relative to the directory's parent, so the file does not depend on where it is
        "prepare": "whyrec "
        + shlex.join(prepare_args(Path(target.name), Path(target.name + "-dataset"))),
    }
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def synthesize(
    users: int,
    items: int,
    interactions: int,
    seed: int = 0,
    out: str | Path = "synthetic",
    *,
    config: SynthConfig | None = None,
) -> SynthResult:
    """Write a synthetic interaction log with ``users`` × ``items`` and exactly
    ``interactions`` rows into the directory ``out`` (see the module docstring).

    ``out`` must not exist, be empty, or hold an earlier synthetic output (which is
    replaced); the directory is written aside and renamed into place. Turn it into a
    dataset with ``whyrec data prepare`` (:func:`prepare_args`) or, in Python,
    ``prepare_dataset(load_synthetic(out), out=..., name=...)``.
    """
    from whyrec.io import atomic_path

    config = config or SynthConfig()
    config.check()
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"synthetic data: --seed must be a non-negative integer, got {seed!r}")
    cap = _check_sizes(users, items, interactions, config)
    target = Path(out)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / INFO_FILE).is_file())
    ):
        raise DataError(
            "output exists and is not an earlier synthetic directory (no synth.json); "
            "expected a new or empty directory",
            path=target,
        )

    cat = _catalogue(items, config, np.random.default_rng([seed, _CATALOGUE]))
    titles = _titles(cat, np.random.default_rng([seed, _TITLES]))
    user_rng = np.random.default_rng([seed, _USERS])
    lengths = user_lengths(users, interactions, cap, config, user_rng)
    tastes, taste_cum = _user_tastes(lengths, cat, config, user_rng)
    start = _START + user_rng.integers(0, _START_SPAN, users)
    user_bias = user_rng.normal(0.0, 0.5, users)

    with atomic_path(target, is_dir=True) as tmp:
        _write_interactions(
            tmp / INTERACTIONS_FILE,
            seed,
            items,
            lengths,
            (tastes, taste_cum),
            start,
            user_bias,
            cat,
            config,
        )
        _write_items(tmp / ITEMS_FILE, items, cat, titles)
        counts = {"users": users, "items": items, "interactions": interactions}
        _write_info(tmp / INFO_FILE, target, seed, counts, len(cat.taste_mass), config)
    return SynthResult(
        directory=target,
        interactions=target / INTERACTIONS_FILE,
        items=target / ITEMS_FILE,
        info=target / INFO_FILE,
        counts=counts,
    )
