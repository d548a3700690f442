"""ilrec-index: residual k-means, item embeddings and the CLI that writes an LC-Rec index.json."""

import json
from collections import Counter

import pandas as pd
import pytest
import torch

from ilrec_trl.data import load_interactions, load_lcrec_dataset, load_movielens_100k, load_synthetic
from ilrec_trl.indexing import (
    codes_to_index,
    collaborative_embeddings,
    kmeans,
    mix_embeddings,
    residual_kmeans,
    sinkhorn_assign,
    text_embeddings,
)
from ilrec_trl.indexing.embeddings import encoder_embeddings
from ilrec_trl.indexing.rqkmeans import collision_groups
from ilrec_trl.scripts import index as index_cli


def blobs(n_per=20, centers=((0, 0), (10, 0), (0, 10), (10, 10)), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.tensor(c, dtype=torch.float32) + 0.3 * torch.randn(n_per, 2, generator=g) for c in centers])
    return x, torch.arange(len(centers)).repeat_interleave(n_per)


def test_kmeans_recovers_blobs_and_is_seeded():
    x, truth = blobs()
    centroids, assign = kmeans(x, 4, seed=1)
    # the same partition as the truth, up to relabelling
    assert all(len(set(assign[truth == c].tolist())) == 1 for c in range(4)) and len(set(assign.tolist())) == 4
    assert torch.allclose(centroids[assign], torch.stack([x[assign == a].mean(0) for a in assign.tolist()]), atol=1e-5)
    assert torch.equal(kmeans(x, 4, seed=1)[1], assign)
    small_c, small_a = kmeans(x[:3], 8)  # fewer points than clusters: one cluster per point
    assert small_c.shape == (3, 2) and sorted(small_a.tolist()) == [0, 1, 2]


def test_sinkhorn_balances_where_argmin_does_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    centroids = torch.cat([torch.zeros(1, 4), 5 + torch.randn(3, 4, generator=g)])  # one centroid near everyone
    d = torch.cdist(x, centroids).pow(2)
    assert torch.bincount(d.argmin(1), minlength=4).max() == 64
    counts = torch.bincount(sinkhorn_assign(d), minlength=4)
    assert counts.max() <= 20 and counts.min() >= 12  # ~16 each
    _, balanced = kmeans(torch.cat([x, x[:8] + 50]), 4, balanced=True)
    assert torch.bincount(balanced, minlength=4).max() <= 24  # plain k-means puts 64 in one cluster


def test_collision_groups_match_a_counter():
    codes = torch.tensor([[0, 1], [2, 3], [0, 1], [0, 1], [2, 3], [5, 5]])
    seen, expected = Counter(), []
    for row in map(tuple, codes.tolist()):
        expected.append(seen[row])
        seen[row] += 1
    assert collision_groups(codes).tolist() == expected == [0, 0, 1, 2, 1, 0]


@pytest.mark.parametrize("balanced, digest", [(False, "ccf53fefa3c0da6e"), (True, "5b140489079e00ad")])
def test_codes_for_a_fixed_seed_are_unchanged(balanced, digest):
    """Catalogues within the sample size (3,000 points <= 256 x 16) are fitted on every point: the codes are those of
    the implementation before sampling existed (their SHA-256, recorded then)."""
    import hashlib

    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))
    codes = residual_kmeans(x, levels=3, codebook_size=16, seed=0, balanced=balanced, iters=20 if balanced else 50)
    assert hashlib.sha256(json.dumps(codes.codes.tolist()).encode()).hexdigest()[:16] == digest


@pytest.mark.parametrize("balanced", [False, True])
def test_kmeans_on_a_sample_then_every_point(balanced):
    """Over `max_points_per_centroid x k` points the centroids come from a seeded sample and every point is assigned
    to them (the nearest one, or by the sample's Sinkhorn potentials): seeded, nearly as tight as fitting on every
    point, and as balanced."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1500, 4, generator=g) + 6 * torch.randn(1, 4, generator=g) for _ in range(8)])

    def inertia(centroids, assign):
        return float((x - centroids[assign]).pow(2).sum())

    full = kmeans(x, 8, seed=3, balanced=balanced, max_points_per_centroid=None)
    sampled = kmeans(x, 8, seed=3, balanced=balanced, max_points_per_centroid=64)  # a 512-point sample
    assert torch.equal(kmeans(x, 8, seed=3, balanced=balanced, max_points_per_centroid=64)[1], sampled[1])
    assert inertia(*sampled) <= 1.05 * inertia(*full)
    if not balanced:
        assert torch.equal(sampled[1], torch.cdist(x.double(), sampled[0].double()).argmin(1))
    else:
        counts = torch.bincount(sampled[1], minlength=8)
        assert int(counts.max()) <= 1.25 * len(x) / 8, counts


def test_sinkhorn_in_chunks_equals_one_matrix():
    from ilrec_trl.indexing.rqkmeans import sinkhorn_assign_chunks

    d = torch.rand(1000, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    assert torch.equal(sinkhorn_assign_chunks(list(d.split(333))), sinkhorn_assign(d))


def test_residual_kmeans_codes_and_collision_level():
    x, _ = blobs(n_per=10)
    x = torch.cat([x, x[:3]])  # three exact duplicates must collide before the collision level
    result = residual_kmeans(x, levels=2, codebook_size=4, seed=0)
    assert result.codes.shape == (43, 3) and result.collision_level_added
    assert result.stats["unique_identifiers"] == 43 and result.stats["items_in_collisions"] >= 6
    energies = [s["residual_energy_after"] for s in result.stats["levels"]]
    assert energies[0] < result.stats["levels"][0]["residual_energy_before"] and energies[1] <= energies[0]
    assert result.codes[:, :2].max() < 4 and all(s["codes_used"] == 4 for s in result.stats["levels"])
    plain = residual_kmeans(x, levels=2, codebook_size=4, seed=0, collision_level=False)
    assert plain.codes.shape == (43, 2) and torch.equal(plain.codes, result.codes[:, :2])
    assert torch.equal(plain.codes[40:], plain.codes[:3])
    with pytest.raises(ValueError, match="NaN"):
        residual_kmeans(torch.full((4, 2), float("nan")))


def test_index_loads_with_the_lcrec_loader(tmp_path):
    x, _ = blobs(n_per=10)
    codes = residual_kmeans(torch.cat([x, x[:2]]), levels=2, codebook_size=4).codes
    index = codes_to_index(codes)
    assert index["0"][0].startswith("<a_") and index["0"][2].startswith("<c_")
    (tmp_path / "Toy.index.json").write_text(json.dumps(index))
    (tmp_path / "Toy.inter.json").write_text(json.dumps({"u": list(range(0, 42, 3)), "v": [1, 2, 3, 4]}))
    data = load_lcrec_dataset(tmp_path, "Toy")
    assert len(set(data.catalog.identifiers)) == 42 and data.catalog.num_resolved_collisions == 0


def test_embeddings_text_mix_and_encoder(tmp_path):
    texts = ["red electric guitar", "blue electric guitar", "drum sticks maple", "drum kit maple", "capo"]
    e = text_embeddings(texts, dim=3)
    assert e.shape == (5, 3) and torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-5)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 0]
    with pytest.raises(ValueError, match="1 items have no text"):
        text_embeddings(["a", " "])
    mixed = mix_embeddings([e, torch.randn(5, 4)], [0.25, 0.75])
    assert mixed.shape == (5, 7) and torch.allclose(mixed[:, :3].norm(dim=1), torch.full((5,), 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="different numbers of items"):
        mix_embeddings([e, torch.randn(4, 2)])

    from transformers import BertConfig, BertModel

    from ilrec_trl.data import build_word_tokenizer

    tok = build_word_tokenizer(texts)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32)).eval()
    model.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    got = encoder_embeddings(texts, str(tmp_path / "enc"), batch_size=2)
    with torch.no_grad():  # reference: each text alone (no padding), mean over its tokens
        ref = torch.stack([model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in texts])
    assert torch.allclose(got, torch.nn.functional.normalize(ref, dim=1), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        text_embeddings(texts, encoder=str(tmp_path / "missing"))


def test_collaborative_embeddings():
    data = load_synthetic(num_users=60, num_items=32)
    e = collaborative_embeddings(data.train, len(data.catalog), dim=8)
    seen = sorted({i for r in data.train for i in r["history"] + [r["item_id"]]})
    assert e.shape == (32, 8) and torch.allclose(e[seen].norm(dim=1), torch.ones(len(seen)), atol=1e-4)


@pytest.fixture
def catalogue_files(tmp_path):
    genres = ["rock guitar", "jazz piano", "drum kit", "violin bow"]
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(24)],
                          "title": [f"{genres[k % 4].split()[0].title()} item {k}" for k in range(24)],
                          "text": [genres[k % 4] for k in range(24)]})
    g = torch.Generator().manual_seed(0)
    rows = [(f"u{u}", f"i{int(i)}", t) for u in range(30)
            for t, i in enumerate(torch.randint(24, (6,), generator=g))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


@pytest.mark.parametrize("embedding", ["text", "cf", "mix"])
def test_cli_writes_a_loadable_index(catalogue_files, capsys, embedding):
    out = catalogue_files / "items.index.json"
    report = index_cli.run(["--dataset", "interactions", "--interactions_file", str(catalogue_files / "inter.csv"),
                            "--items_file", str(catalogue_files / "items.csv"), "--output", str(out),
                            "--embedding", embedding, "--levels", "2", "--codebook_size", "4",
                            "--embedding_dim", "8", "--balanced"])
    assert "| a | 4 | 4 |" in capsys.readouterr().out
    saved = json.loads(out.with_suffix(".report.json").read_text())
    assert saved["unique_identifiers"] == 24 == report["num_items"] and saved["item_ids"][0] == "i0"
    data = load_interactions(catalogue_files / "inter.csv", catalogue_files / "items.csv", index_file=out)
    assert len(set(data.catalog.identifiers)) == 24 and data.catalog.titles[0] == "Rock item 0"
    if embedding == "text":  # items of one genre share their first code
        first = [json.loads(out.read_text())[str(k)][0] for k in range(24)]
        assert all(first[k] == first[k % 4] for k in range(24))


@pytest.mark.parametrize("per_centroid", [0, 2])
def test_cli_max_points_per_centroid_reaches_the_fit(catalogue_files, per_centroid, monkeypatch):
    """24 items, 4 codes: `--max_points_per_centroid 2` fits each level on a sample of 8 items, 0 on all 24 (`None`);
    the index written is the fit's, unique."""
    from ilrec_trl.indexing import residual_kmeans

    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["max_points_per_centroid"], residual_kmeans(*args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(index_cli, "residual_kmeans", spy)
    out = catalogue_files / f"items{per_centroid}.index.json"
    index_cli.run(["--dataset", "interactions", "--interactions_file", str(catalogue_files / "inter.csv"),
                   "--items_file", str(catalogue_files / "items.csv"), "--output", str(out), "--embedding", "text",
                   "--levels", "2", "--codebook_size", "4", "--embedding_dim", "8",
                   "--max_points_per_centroid", str(per_centroid)])
    assert [setting for setting, _ in seen] == [per_centroid or None]
    codes = seen[0][1].codes
    saved = json.loads(out.read_text())
    assert [saved[str(k)][0] for k in range(24)] == [f"<a_{int(c)}>" for c in codes[:, 0]]
    assert len({tuple(v) for v in saved.values()}) == 24


def test_cli_bad_inputs_leave_nothing(tmp_path):
    out = tmp_path / "x.index.json"
    with pytest.raises(ValueError, match="no item titles or texts to embed: use --embedding cf"):
        index_cli.run(["--dataset", "synthetic", "--synthetic_users", "40", "--output", str(out)])
    with pytest.raises(ValueError, match="--output is required"):
        index_cli.run(["--dataset", "synthetic"])
    with pytest.raises(ValueError, match="--cf_weight 2.0 must be between 0 and 1"):
        index_cli.run(["--dataset", "synthetic", "--output", str(out), "--cf_weight", "2"])
    with pytest.raises(ValueError, match="--max_points_per_centroid -1 must be >= 0"):
        index_cli.run(["--dataset", "synthetic", "--output", str(out), "--max_points_per_centroid", "-1"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.data
@pytest.mark.slow
def test_movielens_index_done_when(shared_data_dir, tmp_path):
    """The issue's done-when: unique identifiers for all 1,682 items, loadable by the LC-Rec loader."""
    ml = shared_data_dir / "ml-100k"
    out = tmp_path / "ml.index.json"
    index_cli.run(["--dataset", "movielens", "--data_dir", str(ml), "--output", str(out)])
    index = json.loads(out.read_text())
    assert len(index) == 1682 and len({"".join(v) for v in index.values()}) == 1682
    data = load_movielens_100k(ml, index_file=out)
    assert data.catalog.num_resolved_collisions == 0 and data.catalog.titles[0] == "Toy Story (1995)"
    sequences = {r["user_id"]: r["history"] + [r["item_id"]] for r in data.test}
    (tmp_path / "ml.inter.json").write_text(json.dumps({str(u): s for u, s in sequences.items()}))
    lcrec = load_lcrec_dataset(tmp_path, "ml")
    assert lcrec.catalog.identifiers == data.catalog.identifiers and len(lcrec.test) == 943
