"""What the explorer computes: each analysis is a name, a checker of its arguments and a call of the library.

A request's arguments are a JSON object. :func:`canonical_args` checks them against the analysis' spec
(:class:`Arg`: type, bounds, default) and returns them complete and in one spelling, so two requests that mean
the same thing have the same canonical JSON, which keys the stored results (:mod:`circuitlab.serve.store`). Only
these names and types are accepted: nothing from a request is evaluated, unpickled or read as a path.

The computations are the library's own (:func:`circuitlab.attribution.direct_logit_attribution`,
:func:`~circuitlab.attribution.logit_lens`, :func:`circuitlab.patching.sweep`, :func:`circuitlab.tracing.trace`);
the next-token distribution and the attention patterns are one forward pass each. Results go out through
:func:`circuitlab.results.to_jsonable`, the library's one serialisation, so the page shows the numbers a notebook
gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from circuitlab.errors import InputError

#: the longest prompt accepted, in characters (tokens are bounded by the model's context and ``max_tokens``)
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Arg:
    """One argument of an analysis: ``kind`` is ``"prompt"``, ``"token"`` (one answer token), ``"int"``,
    ``"float"``, ``"choice"`` or ``"text"``; ``default`` None with ``required`` False means optional."""

    kind: str
    required: bool = False
    default: Any = None
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()
    help: str = ""


@dataclass(frozen=True)
class Analysis:
    """An analysis of the explorer: ``job`` analyses run on the model's worker, the others answer at once."""

    name: str
    title: str
    args: dict[str, Arg]
    run: Callable[..., Any]
    job: bool = False
    help: str = ""
    #: the analysis of the stored run that argument ``run`` names (its result is passed as ``stored``)
    stored_run: Optional[str] = None
    exports: tuple = field(default=("json", "csv", "html"))


def _prompt(model: Any, text: str, what: str, max_tokens: int) -> Any:
    """A prompt as the library takes it: text, or token ids (``"3 17 42"``) for a model without a tokenizer."""
    from circuitlab.core import to_tokens

    if model.tokenizer is None:
        try:
            ids = [int(t) for t in text.replace(",", " ").split()]
        except ValueError:
            ids = []
        if not ids:
            raise InputError(f"{what} should be token ids separated by spaces (this model has no tokenizer), e.g. "
                             "'3 17 42'.")
        tokens = ids
    else:
        tokens = text
    n = to_tokens(model, tokens).shape[-1]
    limit = min(max_tokens, int(model.cfg.n_ctx))
    if n > limit:
        raise InputError(f"{what} is {n} tokens long; this server takes at most {limit}. Shorten it.")
    return tokens


def _token(model: Any, text: str) -> Any:
    """An answer: a single-token string, or a token id for a model without a tokenizer."""
    if model.tokenizer is None:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"an answer must be one token id for this model (no tokenizer); got {text!r}.") from None
    return text


def check_value(name: str, spec: Arg, value: Any) -> Any:
    """``value`` of argument ``name`` checked against ``spec`` (types from JSON only), or an InputError."""
    if spec.kind in ("prompt", "token", "text"):
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string; got {type(value).__name__}.")
        if spec.kind == "prompt" and not value.strip():
            raise InputError(f"{name} is empty; type a prompt.")
        if len(value) > MAX_PROMPT_CHARS:
            raise InputError(f"{name} is {len(value):,} characters long; this server takes at most "
                             f"{MAX_PROMPT_CHARS:,}.")
        return value
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be a whole number; got {value!r:.40}.")
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InputError(f"{name} must be a number; got {value!r:.40}.")
        value = float(value)
    elif spec.kind == "choice":
        if value not in spec.choices:
            raise InputError(f"{name} must be one of {', '.join(map(str, spec.choices))}; got {value!r:.40}.")
        return value
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise InputError(f"{name} must be between {spec.low:g} and {spec.high:g}; got {value}.")
    return value


def canonical_args(analysis: Analysis, args: Any) -> dict[str, Any]:
    """``args`` (a JSON object) checked and completed with the defaults: unknown names, missing required ones and
    values of the wrong type are an :class:`InputError` naming the argument."""
    if not isinstance(args, dict):
        raise InputError(f"the arguments of {analysis.name} must be a JSON object; got {type(args).__name__}.")
    unknown = sorted(set(args) - set(analysis.args))
    if unknown:
        raise InputError(f"{analysis.name} takes no argument {unknown[0]!r:.60}; it takes "
                         f"{', '.join(analysis.args)}.")
    out = {}
    for name, spec in analysis.args.items():
        value = args.get(name)
        if value is None or value == "" and spec.kind in ("token", "text"):
            if spec.required:
                raise InputError(f"{analysis.name} needs {name}.")
            out[name] = spec.default
            continue
        out[name] = check_value(name, spec, value)
    return out


def args_key(args: dict[str, Any]) -> str:
    """The canonical JSON of checked arguments: sorted keys, no spaces."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------
# The views (answer at once) and the jobs (queued per model)
# ---------------------------------------------------------------------------------------------------------

def _last_logits(model: Any, toks: Any) -> Any:
    """The logits at the last position only, exactly as the forward pass computes them
    (:func:`circuitlab.core.final_residual`, then :func:`circuitlab.core.readout` of one position: the unembedding
    of the other positions, ``pos x d_model x d_vocab``, is skipped)."""
    import torch

    from circuitlab.core import final_residual, readout

    with torch.no_grad():
        resid, _ = final_residual(model, toks)
        return readout(model, resid[:, -1]).float()


def next_token(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """The model's next-token distribution after the prompt: the top ``k`` tokens and their probabilities."""

    from circuitlab.core import check_finite, model_name, to_tokens
    from circuitlab.results import TopTokens, token_strings

    toks = to_tokens(model, _prompt(model, args["prompt"], "prompt", max_tokens))
    logits = _last_logits(model, toks)
    check_finite(model, toks, "the next-token logits", logits)
    probs = logits.softmax(-1)
    k = min(args["k"], probs.shape[-1])
    return TopTokens.from_scores(probs, k, lambda ids: token_strings(model, ids), axes=("prompt", "rank"),
                                 labels={"prompt": [args["prompt"]]}, title="Next-token distribution",
                                 metric="probability", model=model_name(model), task=f"prompt {args['prompt']!r}",
                                 meta={"pos": int(toks.shape[-1] - 1)})


def logit_lens(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """:func:`circuitlab.attribution.logit_lens` on the prompt."""
    from circuitlab.attribution import logit_lens as lens

    answer = _token(model, args["answer"]) if args["answer"] else None
    return lens(model, _prompt(model, args["prompt"], "prompt", max_tokens), answer=answer, k=args["k"],
                norm=args["norm"], max_memory=max_memory)


def dla(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """:func:`circuitlab.attribution.direct_logit_attribution` on the prompt; the answer defaults to the model's own
    top next token."""

    from circuitlab.attribution import direct_logit_attribution
    from circuitlab.core import to_tokens

    prompt = _prompt(model, args["prompt"], "prompt", max_tokens)
    if args["answer"]:
        answer = _token(model, args["answer"])
    else:
        answer = int(_last_logits(model, to_tokens(model, prompt))[0].argmax())
    wrong = _token(model, args["wrong"]) if args["wrong"] else None
    layer = args["layer"] if args["by"] == "neuron" else None
    return direct_logit_attribution(model, prompt, answer, wrong=wrong, by=args["by"], layer=layer,
                                    max_memory=max_memory)


def attention(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """Every head's attention pattern on the prompt, ``values[layer, head, query, key]`` (``hook_pattern``)."""
    import torch

    from circuitlab.core import check_finite, model_name, position_labels, to_tokens
    from circuitlab.results import Result, token_strings

    toks = to_tokens(model, _prompt(model, args["prompt"], "prompt", max_tokens))
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    pattern = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0].float()
                           for layer in range(model.cfg.n_layers)])
    check_finite(model, toks, "the attention patterns", pattern)
    return Result(pattern, ("layer", "head", "query", "key"),
                  {"query": position_labels(model, toks), "key": position_labels(model, toks)},
                  title="Attention patterns", metric="attention weight", model=model_name(model),
                  task=f"prompt {args['prompt']!r}", meta={"tokens": token_strings(model, toks[0])})


def patch(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """:func:`circuitlab.patching.sweep` from a clean and a corrupted prompt, with the logit difference
    ``answer - wrong`` as the metric (:class:`circuitlab.metrics.LogitDiff`)."""
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep

    clean = _prompt(model, args["clean"], "clean", max_tokens)
    corrupted = _prompt(model, args["corrupted"], "corrupted", max_tokens)
    metric = LogitDiff(_token(model, args["answer"]), _token(model, args["wrong"]), model=model)
    return sweep(model, clean, corrupted, metric, site=args["site"], by=args["by"], direction=args["direction"],
                 max_memory=max_memory, progress=progress)


def trace(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """:func:`circuitlab.tracing.trace`: causal tracing with noise on the subject's tokens."""
    from circuitlab.tracing import trace as causal_trace

    prompt = _prompt(model, args["prompt"], "prompt", max_tokens)
    return causal_trace(model, prompt, args["subject"], _token(model, args["answer"]), noise=args["noise"],
                        samples=args["samples"], seed=args["seed"], max_memory=max_memory, progress=progress)


def xmd(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False) -> Any:
    """Explanation feedback (XMD, Lee et al. 2022) on the shortcut task of :mod:`circuitlab.concepts.debugging`.

    The user's feedback marks tokens as irrelevant for the task: the shortcut's name (``irrelevant="shortcut"``)
    or every signature's name (``"names"``). The job trains the :class:`~circuitlab.concepts.debugging.
    LinearHeadClassifier` on ``n_train`` reviews per label twice, plainly and with explanation regularisation
    (Ross et al. 2017) of the marked tokens' integrated-gradient attribution (``lam``), all by the library's calls
    (:func:`~circuitlab.concepts.debugging.irrelevant_directions`, :func:`~circuitlab.concepts.debugging.
    train_classifier`), and reports before / after: accuracy in distribution, with the correlation removed and
    reversed, and the integrated gradients (16 steps) of the score over each of ``examples`` signed test reviews.
    """
    import torch

    from circuitlab.concepts import debugging as D
    from circuitlab.core import check_layer, model_name, progress_bar
    from circuitlab.results import Result

    layer = check_layer(model, args["layer"] if args["layer"] is not None else max(0, model.cfg.n_layers // 3))
    bar = progress_bar(total=4 + 2 * args["examples"], progress=progress, desc="explanation feedback")
    train = D.shortcut_reviews(args["n_train"], D.TRAIN_CORRELATION, seed=args["seed"])
    base = D.LinearHeadClassifier(model, layer)
    X = base.features([e.text for e in train])
    bar.update(1)
    G = D.irrelevant_directions(base, train, irrelevant=args["irrelevant"])
    bar.update(1)
    tests = {d: D.shortcut_reviews(args["n_test"], c, seed=args["seed"] + 1000) for d, c in D.DISTRIBUTIONS.items()}
    feats = {d: base.features([e.text for e in t]) for d, t in tests.items()}
    bar.update(1)
    clfs = [D.train_classifier(model, train, layer=layer, lam=lam, features=X, penalty=G)
            for lam in (0.0, args["lam"])]
    acc = torch.tensor([[clf.accuracy(tests[d], feats[d]) for d in D.DISTRIBUTIONS] for clf in clfs])
    bar.update(1)
    signed = [e for e in tests["in distribution"] if e.shortcut][:args["examples"]]
    examples = []
    for e in signed:
        row = {"text": e.text, "label": e.label, "marked": D.shortcut_positions(model, e)}
        for name, clf in zip(("before", "after"), clfs):
            ig = clf.attribute(e.text, steps=16)
            row["tokens"], row[name] = ig.tokens[0], ig.values[0].tolist()
            row[f"{name}_score"] = float(clf.scores([e.text])[0])
            bar.update(1)
        examples.append(row)
    bar.close()
    trainings = ["before (plain)", "after (feedback)"]
    common = dict(model=model_name(model), task=f"{args['n_train']} reviews per label, shortcut {D.SHORTCUT!r} at "
                                                f"{D.TRAIN_CORRELATION}; feedback: {args['irrelevant']} irrelevant")
    heads = {name: {"layer": layer, "weight": clf.weight.detach().double(), "bias": float(clf.bias)}
             for name, clf in zip(("before", "after"), clfs)}
    meta = {"feedback": {"irrelevant": args["irrelevant"], "lam": args["lam"]}, "layer": layer,
            "seed": args["seed"], "examples": examples, "heads": heads}
    return Result(acc, ("training", "distribution"), {"training": trainings, "distribution": list(D.DISTRIBUTIONS)},
                  title="Accuracy before and after explanation feedback", metric="accuracy", meta=meta, **common)


def classify(model: Any, args: dict, *, max_tokens: int, max_memory: int, progress: bool = False,
             stored: Optional[dict] = None) -> Any:
    """A classifier saved by an explanation-feedback run (its head ``before`` or ``after`` the feedback), loaded
    back onto the model and applied to ``text``: integrated gradients (16 steps) of its score over the text's
    tokens, the score itself in ``meta``."""
    import torch

    from circuitlab.concepts.debugging import LinearHeadClassifier

    head = stored["meta"]["heads"][args["which"]]  # written by to_jsonable: float64 numbers round-trip exactly
    weight = torch.tensor(head["weight"]["data"], dtype=torch.float64)
    clf = LinearHeadClassifier(model, head["layer"], weight=weight, bias=head["bias"])
    text = _prompt(model, args["text"], "text", max_tokens)
    ig = clf.attribute(text, steps=16)
    ig.meta = {**ig.meta, "score": float(clf.scores([text])[0]), "run": args["run"], "which": args["which"],
               "tokens": ig.tokens[0]}
    ig.title = f"Integrated gradients of the classifier's score ({args['which']} the feedback)"
    return ig


_PROMPT = Arg("prompt", required=True, help="the prompt")
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "v", "pattern")

ANALYSES: dict[str, Analysis] = {a.name: a for a in [
    Analysis("next_token", "Next token", {"prompt": _PROMPT, "k": Arg("int", default=10, low=1, high=100)},
             next_token, help="the model's next-token distribution"),
    Analysis("logit_lens", "Logit lens", {"prompt": _PROMPT, "answer": Arg("token", help="token to track"),
                                          "k": Arg("int", default=5, low=1, high=20),
                                          "norm": Arg("choice", default="own", choices=("own", "frozen"))},
             logit_lens, help="what the residual stream predicts after each layer (nostalgebraist 2020)"),
    Analysis("dla", "Direct logit attribution",
             {"prompt": _PROMPT, "answer": Arg("token", help="default: the model's top next token"),
              "wrong": Arg("token", help="a competing token: attribute the logit difference"),
              "by": Arg("choice", default="head", choices=("head", "layer", "neuron", "component")),
              "layer": Arg("int", default=None, low=0, high=10_000, help="with by=neuron: one layer")},
             dla, help="each component's direct effect on the answer's logit"),
    Analysis("attention", "Attention patterns", {"prompt": _PROMPT}, attention,
             help="every head's attention pattern (circuitsvis)"),
    Analysis("patch", "Activation patching",
             {"clean": _PROMPT, "corrupted": _PROMPT, "answer": Arg("token", required=True),
              "wrong": Arg("token", required=True), "site": Arg("choice", default="resid_pre", choices=SITES),
              "by": Arg("choice", default="layer,pos", choices=("layer,pos", "layer", "layer,head", "layer,head,pos")),
              "direction": Arg("choice", default="denoising", choices=("denoising", "noising"))},
             patch, job=True, help="patch clean activations into the corrupted run, one slice at a time"),
    Analysis("trace", "Causal tracing",
             {"prompt": _PROMPT, "subject": Arg("text", required=True), "answer": Arg("token", required=True),
              "noise": Arg("float", default=3.0, low=1e-3, high=100.0),
              "samples": Arg("int", default=10, low=1, high=100), "seed": Arg("int", default=0, low=0, high=2**62)},
             trace, job=True, help="restore clean states into a run with the subject corrupted (Meng et al. 2022)"),
    Analysis("xmd", "Explanation feedback",
             {"irrelevant": Arg("choice", default="shortcut", choices=("shortcut", "names"),
                                help="the tokens marked irrelevant for the task"),
              "lam": Arg("float", default=10.0, low=0.0, high=1e4, help="strength of the explanation penalty"),
              "n_train": Arg("int", default=40, low=4, high=400), "n_test": Arg("int", default=20, low=4, high=400),
              "examples": Arg("int", default=3, low=1, high=10), "seed": Arg("int", default=0, low=0, high=2**62),
              "layer": Arg("int", default=None, low=0, high=10_000)},
             xmd, job=True, help="mark tokens irrelevant for the review classifier of concepts.debugging and "
                                 "retrain it with explanation regularisation (XMD, Lee et al. 2022): accuracy and "
                                 "attributions before and after"),
    Analysis("classify", "Saved classifier",
             {"run": Arg("text", required=True, help="the id of an explanation-feedback job"),
              "text": Arg("prompt", required=True, help="a review to classify"),
              "which": Arg("choice", default="after", choices=("after", "before"))},
             classify, stored_run="xmd",
             help="the classifier an explanation-feedback job saved, loaded back and applied to your text"),
]}


def get_analysis(name: Any) -> Analysis:
    """The analysis called ``name``, or an InputError listing them."""
    if not isinstance(name, str) or name not in ANALYSES:
        raise InputError(f"unknown analysis {str(name)[:60]!r}; choose one of {', '.join(ANALYSES)}.")
    return ANALYSES[name]


def describe() -> list[dict[str, Any]]:
    """The analyses and their arguments as JSON, for the page's forms."""
    return [{"name": a.name, "title": a.title, "job": a.job, "help": a.help,
             "args": {n: {"kind": s.kind, "required": s.required, "default": s.default, "choices": list(s.choices),
                          "low": s.low, "high": s.high, "help": s.help} for n, s in a.args.items()}}
            for a in ANALYSES.values()]


# ---------------------------------------------------------------------------------------------------------
# Results out: JSON for the page, plain Results for CSV and the HTML report
# ---------------------------------------------------------------------------------------------------------

#: fields a bundle keeps that are too large to send (the logit lens' full logits: layers x vocabulary)
_DROPPED_FIELDS = {"LogitLens": ("logits",)}


def result_json(result: Any) -> dict[str, Any]:
    """``result`` as :func:`circuitlab.results.to_jsonable` writes it, less the fields in ``_DROPPED_FIELDS``."""
    import dataclasses

    from circuitlab.results import Result, to_jsonable

    dropped = _DROPPED_FIELDS.get(type(result).__name__, ())
    if dropped and dataclasses.is_dataclass(result) and not isinstance(result, Result):
        return {"kind": type(result).__name__, "omitted": list(dropped),
                "fields": {f.name: to_jsonable(getattr(result, f.name)) for f in dataclasses.fields(result)
                           if f.name not in dropped}}
    return to_jsonable(result)


def results_of(data: dict[str, Any]) -> list[Any]:
    """The :class:`~circuitlab.results.Result`\\ s in stored JSON (a result, or each result of a bundle), rebuilt
    by :func:`circuitlab.results.from_jsonable` with the common fields (a subclass' own fields stay in the JSON)."""
    from circuitlab.results import from_jsonable

    def one(d: dict) -> Any:
        kind = "TopTokens" if d.get("kind") == "TopTokens" else "Result"
        keys = ("values", "axes", "labels", "title", "metric", "model", "task", "meta")
        extra = ("token_ids", "tokens") if kind == "TopTokens" else ()
        return from_jsonable({"kind": kind, **{k: d[k] for k in keys + extra}})

    if "values" in data and "axes" in data:
        return [one(data)]
    return [one(v) for v in data.get("fields", {}).values() if isinstance(v, dict) and "values" in v and "axes" in v]
