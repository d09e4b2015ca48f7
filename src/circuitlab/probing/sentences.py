"""The one loader of labelled sentences by name, for the commands and the reproductions.

``"templates"`` (the grammar with gold trees), ``"default"`` (the default offline data, labelled by spaCy), a path
to a CoNLL-U file, or sentences already loaded: :func:`labelled_sentences` turns any of them into a list of
:class:`~circuitlab.probing.data.Sentence`, the first ``n`` of them, drawn with ``seed`` where the source draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from circuitlab.core import check_seed, shorten
from circuitlab.errors import InputError
from circuitlab.probing.data import Sentence, default_sentences, read_conllu, template_sentences

def labelled_sentences(data: Union[str, Path, Sequence[Sentence], None], n: int, *, seed: int = 0,
                       progress: bool = False, option: str = "--data") -> Sequence[Sentence]:
    """``n`` labelled sentences from ``data``:

    - ``None`` or ``"default"``: :func:`~circuitlab.probing.data.default_sentences` (``n``, ``seed``, ``progress``);
    - ``"templates"``: :func:`~circuitlab.probing.data.template_sentences` (``n``, ``seed``);
    - a path to a CoNLL-U file: its first ``n`` sentences (multi-word tokens split into their words);
    - sentences already loaded (a list of :class:`Sentence`): returned as they are, ``n`` and ``seed`` unused.

    Anything else is an :class:`~circuitlab.errors.InputError` naming ``option`` (the command-line option or the
    argument the value came from).
    """
    seed = check_seed(seed)
    if data is not None and not isinstance(data, (str, Path)):
        return data
    if data is None or data == "default":
        return default_sentences(n, seed=seed, progress=progress)
    if data == "templates":
        return template_sentences(n, seed=seed)
    if not Path(data).is_file():
        raise InputError(f"{option} {shorten(str(data))} is neither 'templates', 'default' nor a CoNLL-U file; give "
                         "one of them.")
    return read_conllu(data, multiword="split")[:n]


__all__ = ["labelled_sentences"]
