"""``circuitlab induction -m NAME [-o report.html]``: find a model's induction circuit and print it."""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, seed_int,
                            write_report)


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    add_out_option(p)
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="length of each repeated half (default: 50, or a third of the context)")
    p.add_argument("--n-seqs", type=positive_int, default=20, help="number of repeated random sequences (default 20)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random sequences (default 0)")
    p.add_argument("--method", choices=("mean", "zero"), default="mean", help="ablation method (default mean)")
    p.add_argument("--threshold", type=float, default=0.3,
                   help="absolute floor on the scores that make a head count (default 0.3)")
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.induction import find_induction_circuit

    model = load_model(args.model)
    circuit = find_induction_circuit(model, seq_len=args.seq_len, n_seqs=args.n_seqs, seed=args.seed,
                                     threshold=args.threshold, method=args.method, progress=not args.quiet)
    print(circuit.summary())
    emit(induction_circuit=circuit)
    write_report([circuit], args.out, title=f"Induction circuit: {circuit.model or args.model}")
    return 0


run.arguments = arguments
command("induction", "find induction heads, previous-token heads and their composition; ablate to confirm",
        json="induction_circuit (InductionCircuit: induction and previous-token scores per head, K-composition, "
             "ablation losses, the heads found)")(run)
