"""Real English text for the zoo's language model, from Debian packages installable offline.

Two corpora, both read from files that Debian packages put on disk (nothing is downloaded from elsewhere and
nothing from them is committed to this repository, except the small held-out sample described below):

- **The King James Bible** (1611; public domain; in the UK the Crown's letters patent apply to printing, not to
  a model's weights). Debian packages ``bible-kjv-text`` (the compressed text, ``/usr/lib/bible.data``) and
  ``bible-kjv`` (the ``bible`` reader, GPL-2+, which decompresses it). We dump all 31,102 verses with
  ``bible -f Gen1:1-Rev22:21``: one verse a line, ``"Ge1:1 In the beginning..."``. About 4.3 MB of text.
- **fortune cookies**: Debian packages ``fortunes-min`` and ``fortunes`` (the BSD ``fortune`` collection, BSD
  licence for the collection; quotations of many authors), files in ``/usr/share/games/fortunes``, one cookie
  between lines holding a lone ``%``. We skip the ASCII-art files. About 2.4 MB of text. The offensive
  collection (``fortunes-off``) is never read.

Held out: the books of Ruth, Jonah, Titus and Philemon (204 verses, about 27 KB) are never trained on. Their text
ships with the model as ``heldout.txt`` (public domain), so tests measure held-out loss without apt. They were
chosen because they have no near-duplicate passages elsewhere in the Bible (unlike Kings/Chronicles or the
gospels), so a held-out loss is not quietly a training loss.

``dict-gcide`` (GNU Collaborative International Dictionary, GPL) is also in Debian, but dictionary entries are a
poor match for a tiny model and its licence would complicate the weights; we do not use it.

If a corpus is missing, :func:`require_corpora` says which ``apt-get install`` to run, or runs it when asked to
(``install=True``, as root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from circuitlab.errors import CircuitlabError

APT_PACKAGES = ("bible-kjv", "bible-kjv-text", "fortunes-min", "fortunes")
FORTUNE_DIR = Path("/usr/share/games/fortunes")
FORTUNE_SKIP = ("art", "ascii-art", "translate-me", "off")  # pictures, non-English, offensive

#: books never trained on; their text ships as heldout.txt (abbreviations as ``bible -f`` prints them)
HELDOUT_BOOKS = ("Ruth", "Jonah", "Titus", "Phmn")
N_KJV_VERSES = 31102

_VERSE_RE = re.compile(r"^([0-9]?[A-Za-z]+)([0-9]+):([0-9]+) (.*)$")


class CorpusMissingError(CircuitlabError):
    """A Debian-packaged corpus the toy language model trains on is not installed."""


@dataclass(frozen=True)
class Verse:
    book: str  # abbreviation as ``bible -f`` prints it: "Ge", "Ruth", "1Cor", ...
    chapter: int
    verse: int
    text: str


def _install_hint(packages) -> str:
    return f"sudo apt-get install -y {' '.join(packages)}"


def require_corpora(install: bool = False) -> None:
    """Check that the corpora are installed; with ``install=True`` (as root) install them with apt-get."""
    missing = []
    if shutil.which("bible") is None or not Path("/usr/lib/bible.data").is_file():
        missing += ["bible-kjv", "bible-kjv-text"]
    if not (FORTUNE_DIR / "fortunes").is_file() or not (FORTUNE_DIR / "people").is_file():
        missing += ["fortunes-min", "fortunes"]
    if not missing:
        return
    if install:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise CorpusMissingError(
                f"Cannot install {missing}: installing needs apt-get and root. Run `{_install_hint(missing)}` "
                "yourself, then rerun the recipe."
            )
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)
        return require_corpora(install=False)
    raise CorpusMissingError(
        f"The toy language model trains on Debian-packaged text; missing packages: {', '.join(missing)}. "
        f"Install them with `{_install_hint(missing)}` (or pass --install-corpora when running as root)."
    )


def kjv_verses() -> list[Verse]:
    """All 31,102 verses of the King James Bible, in order, via the ``bible`` reader."""
    require_corpora()
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "100000"}).stdout
    verses = []
    for line in out.splitlines():
        m = _VERSE_RE.match(line)
        if m:
            verses.append(Verse(m[1], int(m[2]), int(m[3]), m[4].strip()))
    if len(verses) != N_KJV_VERSES:
        raise CorpusMissingError(
            f"`bible -f Gen1:1-Rev22:21` gave {len(verses)} verses, expected {N_KJV_VERSES}; the bible-kjv "
            "package may be a different version. Reinstall it with `sudo apt-get install --reinstall bible-kjv "
            "bible-kjv-text`."
        )
    return verses


def kjv_documents(verses: list[Verse]) -> list[str]:
    """One document per chapter: its verses one a line, without verse numbers."""
    docs: dict[tuple[str, int], list[str]] = {}
    for v in verses:
        docs.setdefault((v.book, v.chapter), []).append(v.text)
    return ["\n".join(lines) for lines in docs.values()]


def split_heldout(verses: list[Verse]) -> tuple[list[Verse], list[Verse]]:
    """``(train, heldout)``: held out are the books in :data:`HELDOUT_BOOKS`."""
    train = [v for v in verses if v.book not in HELDOUT_BOOKS]
    heldout = [v for v in verses if v.book in HELDOUT_BOOKS]
    return train, heldout


def fortunes() -> list[str]:
    """The fortune cookies (English prose, quotations, jokes, short poems), in file order."""
    require_corpora()
    cookies = []
    for path in sorted(FORTUNE_DIR.iterdir()):
        if path.suffix in (".dat", ".u8") or path.name in FORTUNE_SKIP or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in re.split(r"^%$", text, flags=re.M):
            lines = [ln.replace("\t", "    ").rstrip() for ln in cookie.strip("\n").splitlines()]
            cookie = "\n".join(lines).strip()
            if cookie:
                cookies.append(cookie)
    return cookies


def real_documents(max_chars: int | None = None, install: bool = False) -> tuple[list[str], str, dict[str, int]]:
    """Training documents (KJV chapters and fortune cookies, interleaved deterministically) and held-out text."""
    require_corpora(install=install)
    train_verses, held_verses = split_heldout(kjv_verses())
    kjv = kjv_documents(train_verses)
    cookies = fortunes()
    # interleave so any prefix of the list (max_chars) holds both kinds; order is fixed, not random
    docs, ratio = [], len(cookies) / len(kjv)
    ci = 0
    for i, chapter in enumerate(kjv):
        docs.append(chapter)
        while ci < min(len(cookies), round((i + 1) * ratio)):
            docs.append(cookies[ci])
            ci += 1
    docs += cookies[ci:]
    if max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        docs = kept
    heldout = "\n".join(v.text for v in held_verses) + "\n"
    sizes = {"kjv_train_chars": sum(map(len, kjv)), "fortune_chars": sum(map(len, cookies)),
             "used_train_chars": sum(map(len, docs)), "heldout_chars": len(heldout),
             "kjv_train_verses": len(train_verses), "heldout_verses": len(held_verses), "fortunes": len(cookies)}
    return docs, heldout, sizes
