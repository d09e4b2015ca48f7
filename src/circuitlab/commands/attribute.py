"""``circuitlab attribute``: direct logit attribution and the logit lens for one prompt, from the shell.

    circuitlab attribute --model zoo/attn-only-2l --prompt "t1 t2 t3 t1 t2" --answer " t3"
    circuitlab attribute --model gpt2-small --prompt "The Eiffel Tower is in" --answer " Paris" --wrong " Rome"
"""

from __future__ import annotations

import argparse

from circuitlab.cli import answer_arg, command, prompt_arg


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name, model directory or pretrained name")
    p.add_argument("--prompt", required=True, help="the prompt (token ids if the model has no tokenizer)")
    p.add_argument("--answer", required=True, help="the correct next token, e.g. ' Paris' (mind the space)")
    p.add_argument("--wrong", help="a competing token: attribute logit(answer) - logit(wrong)")
    p.add_argument("--by", default="head", choices=["head", "layer", "position", "component", "neuron"],
                   help="how to split the residual stream (default: head)")
    p.add_argument("--pos", type=int, default=-1, help="position whose prediction is attributed (default: last)")
    p.add_argument("--top", type=int, default=10, help="how many components to list")
    p.add_argument("--no-lens", action="store_true", help="skip the logit lens")
    p.add_argument("--html", metavar="FILE", help="also write the heatmaps to this HTML file")


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.attribution import direct_logit_attribution, logit_lens

    model = load_model(args.model)
    prompt = prompt_arg(model, args.prompt)
    answer, wrong = answer_arg(model, args.answer), answer_arg(model, args.wrong, "--wrong")
    dla = direct_logit_attribution(model, prompt, answer, wrong=wrong, by=args.by, pos=args.pos)
    total = direct_logit_attribution(model, prompt, answer, wrong=wrong, by="component", pos=args.pos)
    print(f"{dla.title} on {model.cfg.model_name}: {dla.metric} at {dla.task}")
    print(f"model's {dla.metric}: {float(dla.model_logit[0]):.4f}   "
          f"(sum of all direct contributions: {float(total.per_prompt[0].sum()):.4f})")
    print(f"top {args.top} by |value|:")
    for idx, v in dla.top(args.top, absolute=True):
        print(f"  {dla.label_of(idx):<28} {v:+.4f}")
    parts = [dla.to_html()]
    if not args.no_lens:
        lens = logit_lens(model, prompt, answer=answer, pos=args.pos)
        print("logit lens (each layer's residual through the final norm and unembedding):")
        print(f"  {'layer':<6} {'logit':>8} {'prob':>7} {'rank':>6}  top tokens")
        for li, lab in enumerate(lens.layer_labels):
            logit, prob = float(lens.answer_logit.values[0, li]), float(lens.answer_prob.values[0, li])
            rank = int(lens.answer_rank.values[0, li])
            print(f"  {lab:<6} {logit:8.3f} {prob:7.3f} {rank:6d}  {lens.top_strings[li][0]}")
        parts.append(lens.to_html())
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write("<!doctype html><meta charset='utf-8'>\n" + "\n".join(parts))
        print(f"wrote {args.html}")
    return 0


run.arguments = arguments
command("attribute", "direct logit attribution and logit lens for one prompt")(run)
