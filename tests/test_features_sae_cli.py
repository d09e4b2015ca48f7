"""``circuitlab sae train|eval|list``: a small run end to end, its folder read back by load_sae."""

from pathlib import Path

import circuitlab as cl
from circuitlab.cli import main
from circuitlab.features import load_sae


def test_sae_train_then_eval(tmp_path, capsys):
    held = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(held.read_text().splitlines()[:8]))
    few = tmp_path / "few.txt"
    few.write_text("\n".join(held.read_text().splitlines()[8:10]))
    rc = main(["sae", "train", "-m", "zoo/toy-lm", "--hook", "1", "--data", str(data), "--save", str(tmp_path / "s"),
               "--d-sae", "128", "--k", "4", "--training-tokens", "512", "--batch-tokens", "128",
               "--context-size", "16", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "blocks.1.hook_resid_post" in out
    sae = load_sae(tmp_path / "s" / "blocks.1.hook_resid_post")
    assert sae.cfg.k == 4 and sae.cfg.d_sae == 128
    rc = main(["sae", "eval", "-m", "zoo/toy-lm", "--sae", str(tmp_path / "s" / "blocks.1.hook_resid_post"),
               "--data", str(few), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "explained_variance" in out and "l0: 4" in out
    assert main(["sae", "list"]) == 0
