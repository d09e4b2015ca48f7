"""``circuitlab attribute``: direct logit attribution and the logit lens for one prompt, from the shell.

    circuitlab attribute -m zoo/attn-only-2l --prompt "t1 t2 t3 t1 t2" --answer " t3"
    circuitlab attribute -m gpt2-small --prompt "The Eiffel Tower is in" --answer " Paris" --wrong " Rome" -o dla.html
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, emit, positive_int,
                            prompt_arg, write_report)


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--prompt", required=True, help="the prompt (token ids if the model has no tokenizer)")
    p.add_argument("--answer", required=True, help="the correct next token, e.g. ' Paris' (mind the space)")
    p.add_argument("--wrong", help="a competing token: attribute logit(answer) - logit(wrong)")
    p.add_argument("--by", default="head", choices=["head", "layer", "position", "component", "neuron"],
                   help="how to split the residual stream (default: head)")
    p.add_argument("--pos", type=int, default=-1, help="position whose prediction is attributed (default: last)")
    p.add_argument("--top", type=positive_int, default=10, help="how many components to list (default 10)")
    p.add_argument("--no-lens", action="store_true", help="skip the logit lens")
    add_out_option(p)
    add_quiet_option(p)  # one forward pass: nothing to show progress of, but every analysis takes the option


_UNITS = {"head": "heads", "layer": "layer outputs (attention and MLP)", "neuron": "neurons",
          "position": "(head, source position) pairs"}
_REST = {"head": "embeddings, attention biases b_O, MLPs and final biases",
         "layer": "embeddings and final biases",
         "neuron": "embeddings, attention, MLP biases and final biases",
         "position": "embeddings, attention biases b_O, MLPs and final biases"}


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.attribution import direct_logit_attribution, logit_lens

    model = load_model(args.model)
    prompt = prompt_arg(model, args.prompt)
    answer, wrong = answer_arg(model, args.answer), answer_arg(model, args.wrong, "--wrong")
    dla = direct_logit_attribution(model, prompt, answer, wrong=wrong, by=args.by, pos=args.pos)
    total = direct_logit_attribution(model, prompt, answer, wrong=wrong, by="component", pos=args.pos)
    print(f"{dla.title} on {model.cfg.model_name}: {dla.metric} at {dla.task}")
    everything, shown = float(total.per_prompt[0].sum()), float(dla.per_prompt[0].sum())
    print(f"model's {dla.metric}: {float(dla.model_logit[0]):.4f}   "
          f"(sum of all direct contributions: {everything:.4f})")
    if args.by != "component":  # the split covers part of the residual stream: say how much, and what is left
        rest = everything - shown
        of_layer = f" of layer {dla.meta['layer']}" if args.by == "neuron" and "layer" in dla.meta else ""
        print(f"  = {shown:.4f} from the {dla.values.numel()} {_UNITS[args.by]}{of_layer}")
        print(f"  {'+' if rest >= 0 else '-'} {abs(rest):.4f} from the rest ({_REST[args.by]}; --by component "
              "lists every term)")
    print(f"top {args.top} by |value|:")
    for idx, v in dla.top(args.top, absolute=True):
        print(f"  {dla.label_of(idx):<28} {v:+.4f}")
    items = [dla]
    emit(attribution=dla, all_components=total)
    if not args.no_lens:
        lens = logit_lens(model, prompt, answer=answer, pos=args.pos)
        print("logit lens (each layer's residual through the final norm and unembedding):")
        print(f"  {'layer':<6} {'logit':>8} {'prob':>7} {'rank':>6}  top tokens")
        for li, lab in enumerate(lens.answer_prob.labels["layer"]):
            logit, prob = float(lens.answer_logit.values[0, li]), float(lens.answer_prob.values[0, li])
            rank = int(lens.answer_rank.values[0, li])
            print(f"  {lab:<6} {logit:8.3f} {prob:7.3f} {rank:6d}  {lens.top.tokens[li][0]}")
        items.append(lens)
        emit(logit_lens=lens)
    against = f", against {args.wrong!r}" if args.wrong else ""
    intro = f"Prompt {args.prompt!r}, answer {args.answer!r}{against}."
    write_report(items, args.out, title=f"Logit attribution: {model.cfg.model_name or args.model}", intro=intro)
    return 0


run.arguments = arguments
command("attribute", "direct logit attribution and logit lens for one prompt",
        json="attribution (DLAResult split --by, with model_logit and per_prompt), all_components (DLAResult by "
             "component: every direct term), logit_lens (LogitLens: answer logit, prob, rank and top tokens per "
             "layer; absent with --no-lens)")(run)
