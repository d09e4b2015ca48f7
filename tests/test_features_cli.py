"""``circuitlab sae dashboard|steer|attribute``: small runs end to end on zoo/toy-lm and a shipped SAE."""

import json
from pathlib import Path

import pytest

import circuitlab as cl
from circuitlab.cli import main
from circuitlab.commands.sae import parse_features
from circuitlab.errors import InputError


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    held = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    path = tmp_path_factory.mktemp("texts") / "few.txt"
    path.write_text("\n".join(held.read_text().splitlines()[:24]))
    return path


def test_parse_features():
    assert parse_features("all") is None
    assert parse_features("3,5-7, 10") == [3, 5, 6, 7, 10]
    with pytest.raises(InputError, match="--features"):
        parse_features("x-y")


def test_sae_dashboard_writes_the_pages(tmp_path, few, capsys):
    rc = main(["sae", "dashboard", "toy-lm/res-2", "--features", "3,17", "--data", str(few), "-o", str(tmp_path),
               "-q"])
    got = capsys.readouterr()
    out = got.out
    assert rc == 0, got.err
    assert "Wrote 2 feature dashboards" in out and "latents of SAE" in out
    assert (tmp_path / "index.html").is_file() and (tmp_path / "feature-17.html").is_file()
    rows = json.loads((tmp_path / "features.json").read_text())
    assert [r["latent"] for r in rows] == [3, 17] and all(r["explanation"] for r in rows)
    assert "feature-3.html" in (tmp_path / "index.html").read_text()


def test_sae_attribute_and_steer(capsys):
    rc = main(["sae", "attribute", "toy-lm/res-1", "--prompt", "And the LORD said unto", "--answer", " Moses",
               "--wrong", " the", "--exact", "2", "--top", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "baseline: zero" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert len(rows) == 3 and len(rows[0]) == 3 and len(rows[2]) == 2  # exact beside the first two only
    rc = main(["sae", "steer", "toy-lm/res-1", "--prompt", "And the LORD said unto", "--feature", "7", "--alpha",
               "0", "--top", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "KL(clean || steered) = 0.0000" in out
