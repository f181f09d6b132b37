"""The two warnings a reader of a selection needs (issue 22): a best match weaker than the pool's
own tasks usually reach, and a top-k whose last task ties with the first one left out."""

from __future__ import annotations

import json

import pytest
from test_cli import run

from insta.baselines import BM25Selector
from insta.pools import load_pool
from insta.select import FLOOR_QUANTILE, Target, match_floor


@pytest.fixture()
def niv2_summaries(shared_data):
    return f"jsonl:{shared_data / 'niv2' / 'tasks.jsonl'}?id=name&instruction=summary&label=category&where=split_default:test"


def test_match_floor_is_the_pools_own_low_quantile(niv2_summaries):
    pool = load_pool(niv2_summaries)
    selector = BM25Selector().fit(pool)
    floor = match_floor(selector)
    sims = [s.results[0].match.similarity for s in selector.iter_select(
        [Target.from_task(pool[i]) for i in range(0, len(pool), 7)], 1, n_instructions=1) if s.results]
    share_below = sum(x < floor for x in sims) / len(sims)
    assert 0 < floor and share_below < 4 * FLOOR_QUANTILE  # another sample of the pool: few below it
    assert match_floor(BM25Selector().fit(load_pool(niv2_summaries).filter(lambda t: t.id < "task050"))) is None


@pytest.mark.slow
def test_weak_match_and_its_absence(monkeypatch, capsys, niv2_summaries):
    code, out, err = run(monkeypatch, capsys, "select", "-p", niv2_summaries, "--method", "insta", "-k", "3", "--json",
                         "-q", "-i", "Answer the question about the passage.")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["match_floor"] > 0 and not any("weak match" in w for w in doc["selections"][0]["warnings"])
    code, out, err = run(monkeypatch, capsys, "select", "-p", niv2_summaries, "--method", "insta", "-k", "3", "--json",
                         "-q", "-i", "Compute the eigenvalues of the quantum Hamiltonian of a hydrogen atom.")
    assert code == 0, err
    sel = json.loads(out)["selections"][0]
    (weak,) = [w for w in sel["warnings"] if w.startswith("weak match for this pool")]
    assert f"best match (cosine {sel['results'][0]['match']['similarity']:g})" in weak
    assert "warning: target target: weak match for this pool" in err
    code, out, err = run(monkeypatch, capsys, "select", "-p", niv2_summaries, "--method", "random", "--json", "-q",
                         "-i", "anything at all")
    assert code == 0, err
    assert "match_floor" not in json.loads(out)  # random has no similarity to compare
