"""The shipped recommender: artefacts saved by ilrec-train / the trainers, `Recommender`, `ilrec-recommend`, and
`ilrec-eval`'s catalogue check."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ilrec_trl import ILRecTrainer, ItemCatalog, Recommender, RecommenderConfig
from ilrec_trl.artifact import CatalogMismatchError, load_recommender_artifacts, save_recommender_artifacts
from ilrec_trl.catalog import CatalogError
from ilrec_trl.data.prompts import format_prompt
from ilrec_trl.generation import constrained_beam_search
from ilrec_trl.scripts import evaluate as eval_cli
from ilrec_trl.scripts import recommend as recommend_cli
from ilrec_trl.scripts import train as train_cli

from .conftest import REPO

TINY = ["--max_steps", "2", "--synthetic_users", "60", "--synthetic_items", "32", "--eval_split", "none",
        "--logging_steps", "1"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model saved by `ilrec-train` (the embedded default, shortened to 2 steps), no data flags given."""
    out = tmp_path_factory.mktemp("ship") / "run"
    train_cli.run([*TINY, "--method", "ilrec", "--output_dir", str(out)])
    return out


@pytest.fixture(scope="module")
def rec(saved):
    return Recommender.from_pretrained(saved, device="cpu")


def test_train_saves_the_artefacts(saved):
    catalog, config = load_recommender_artifacts(saved)
    assert len(catalog) == 32 and catalog.scheme == "semantic_id" and catalog.completion_prefix == ""
    assert (config.template, config.max_history, config.num_beams) == ("sequence", 10, 20)
    assert config.data_name == "synthetic" and config.data_source["synthetic_items"] == 32
    assert config.catalog_fingerprint == catalog.fingerprint and config.data_fingerprint


def test_fresh_process_recommends_from_the_folder_alone(saved):
    code = ("import json; from ilrec_trl import Recommender; "
            f"print(json.dumps(Recommender.from_pretrained({str(saved)!r}).recommend([[1, 2, 3]], k=5)))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=saved.parent,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (ranked,) = json.loads(out.stdout.strip().splitlines()[-1])
    items = [i for i, _ in ranked]
    scores = [s for _, s in ranked]
    assert len(set(items)) == 5 and all(isinstance(i, int) and 0 <= i < 32 for i in items)
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)


def test_recommend_equals_the_constrained_beam_search(rec):
    histories = [[1, 2, 3], [5], list(range(20))]
    got = rec.recommend(histories, k=7)
    prompts = [format_prompt([rec.catalog.identifier(i) for i in h[-10:]], "sequence") for h in histories]
    want = constrained_beam_search(rec.model, rec.tokenizer, rec.catalog, prompts, num_beams=20, k=7)
    assert [[i for i, _ in r] for r in got] == want.items
    torch.testing.assert_close(torch.tensor([[s for _, s in r] for r in got]), torch.tensor(want.scores))


def test_exclude_seen_still_returns_k_items(rec):
    history = list(range(27))  # 27 of the 32 items seen
    narrow = [i for i, _ in rec.recommend([history], k=5, num_beams=5)[0]]
    assert set(narrow) & set(history)  # so 5 beams are not enough: it searches again with 5 + 27 beams
    (got,) = rec.recommend([history], k=5, exclude_seen=True, num_beams=5)
    wide = [i for i, _ in rec.recommend([history], k=32, num_beams=32)[0]]
    assert [i for i, _ in got] == [i for i in wide if i not in history][:5]
    assert len(got) == 5 and not set(i for i, _ in got) & set(history)
    (few,) = rec.recommend([[1, 2]], k=2, exclude_seen=True, num_beams=5)  # enough left: no second search
    narrow = [i for i, _ in rec.recommend([[1, 2]], k=5, num_beams=5)[0]]
    assert [i for i, _ in few] == [i for i in narrow if i not in (1, 2)][:2]


def test_recommend_bad_inputs(rec):
    with pytest.raises(CatalogError, match="history 1: Item 99 is not in the catalogue"):
        rec.recommend([[1, 2], [3, 99]])
    with pytest.raises(CatalogError, match="history 0 is empty"):
        rec.recommend([[]])
    with pytest.raises(CatalogError, match="wrap a single history"):
        rec.recommend([1, 2, 3])
    with pytest.raises(CatalogError, match="history 0: Item '3' is not in the catalogue"):
        rec.recommend([["3"]])
    with pytest.raises(ValueError, match="k=0 is invalid"):
        rec.recommend([[1]], k=0)
    assert rec.recommend([]) == []


def test_source_ids_in_and_out(rec):
    catalog = ItemCatalog(rec.catalog.identifiers, source_ids=[f"sku-{i}" for i in range(32)])
    named = Recommender(rec.model, rec.tokenizer, catalog, rec.config)
    (by_name,) = named.recommend([["sku-1", "sku-2", "sku-3"]], k=5)
    (by_position,) = rec.recommend([[1, 2, 3]], k=5)
    assert [i for i, _ in by_name] == [f"sku-{i}" for i, _ in by_position]


def test_missing_or_broken_artefacts(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        Recommender.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no catalog.json"):
        Recommender.from_pretrained(tmp_path)
    save_recommender_artifacts(tmp_path, ItemCatalog(["a", "b"]))
    with pytest.raises(FileNotFoundError, match="no recommender_config.json"):
        Recommender.from_pretrained(tmp_path)
    (tmp_path / "recommender_config.json").write_text((saved / "recommender_config.json").read_text())
    with pytest.raises(CatalogMismatchError, match="different runs"):
        Recommender.from_pretrained(tmp_path)
    (tmp_path / "recommender_config.json").write_text('{"format": "ilrec-recommender", "version": 1, "max_history": 0}')
    with pytest.raises(CatalogError, match="'max_history' must be an integer >= 1"):
        Recommender.from_pretrained(tmp_path)
    (tmp_path / "catalog.json").write_text("{broken")
    with pytest.raises(CatalogError, match="catalog.json is not valid JSON"):
        Recommender.from_pretrained(tmp_path)


def test_trainer_checkpoints_and_peft_adapters_carry_the_artefacts(rec_data, tokenizer, base_model, args_factory,
                                                                   tmp_path):
    from peft import LoraConfig, PeftModel

    base_dir = tmp_path / "base"
    base_model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    args = args_factory(max_steps=2, save_strategy="steps", save_steps=2, negative_scope="trie", crr_weight=0.0,
                        output_dir=str(tmp_path / "out"))
    trainer = ILRecTrainer(model, args=args, train_dataset=rec_data.train.select(range(16)),
                           processing_class=tokenizer, catalog=rec_data.catalog,
                           peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
                           recommender_config=RecommenderConfig.from_rec_data(rec_data, num_beams=10))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "out" / "checkpoint-2" / "catalog.json").is_file()
    assert (tmp_path / "final" / "adapter_config.json").is_file()
    loaded = Recommender.from_pretrained(tmp_path / "final", device="cpu")
    assert isinstance(loaded.model, PeftModel) and loaded.catalog.fingerprint == rec_data.catalog.fingerprint
    in_memory = Recommender(trainer.model, tokenizer, rec_data.catalog, loaded.config)
    histories = [[1, 2, 3], [7, 8]]
    assert [[i for i, _ in r] for r in loaded.recommend(histories, k=5)] == \
        [[i for i, _ in r] for r in in_memory.recommend(histories, k=5)]


# -- ilrec-recommend -------------------------------------------------------------------------------------------------
def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_recommend_cli_writes_jsonl(saved, rec, tmp_path):
    users = write_lines(tmp_path / "users.jsonl", ['{"user": "u1", "history": [1, 2, 3]}', "",
                                                   '{"user": 7, "history": [5]}'])
    out = tmp_path / "deep" / "recs.jsonl"
    recommend_cli.run(["--model", str(saved), "--input", str(users), "--output", str(out), "--k", "4",
                       "--exclude_seen", "--device", "cpu"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user"] for r in rows] == ["u1", 7]
    want = rec.recommend([[1, 2, 3], [5]], k=4, exclude_seen=True)
    assert [r["items"] for r in rows] == [[i for i, _ in w] for w in want]
    assert all(len(r["scores"]) == 4 for r in rows)
    assert [p.name for p in out.parent.iterdir()] == ["recs.jsonl"]  # no temporary file left


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"user": 1, "history": [1]}', '{"user": 2, "history": [1, 99]}'], r"users.jsonl:2: field 'history': Item 99"),
        (['{"user": 1, "history": [1]}', "{oops"], r"users.jsonl:2: not valid JSON"),
        (['{"history": [1]}'], r"users.jsonl:1: the field 'user' is missing"),
        (['{"user": 1, "history": []}'], r"users.jsonl:1: the field 'history' must be a non-empty list"),
        (['{"user": 1, "history": 3}'], r"users.jsonl:1: the field 'history' must be a non-empty list"),
        (['[1, 2]'], r"users.jsonl:1: expected a JSON object"),
        ([""], r"holds no users"),
    ],
)
def test_recommend_cli_bad_input_writes_nothing(saved, tmp_path, lines, match):
    users = write_lines(tmp_path / "users.jsonl", lines)
    out = tmp_path / "recs.jsonl"
    out.write_text("previous results\n")
    with pytest.raises(ValueError, match=match):
        recommend_cli.run(["--model", str(saved), "--input", str(users), "--output", str(out)])
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.jsonl", "users.jsonl"]


def test_recommend_cli_missing_arguments(saved, tmp_path):
    with pytest.raises(ValueError, match="--input is required"):
        recommend_cli.run(["--model", str(saved), "--output", str(tmp_path / "o.jsonl")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        recommend_cli.run(["--model", str(saved), "--input", str(tmp_path / "none.jsonl"), "--output", "o.jsonl"])


# -- ilrec-eval ------------------------------------------------------------------------------------------------------
def test_eval_reloads_the_saved_data_source(saved, tmp_path):
    metrics = eval_cli.run(["--model", str(saved), "--num_beams", "10", "--ks", "5", "10", "--max_users", "4",
                            "--output", str(tmp_path / "m.json")])
    assert metrics["num_users"] == 4 and 0 <= metrics["ndcg@10"] <= 1
    assert 0 < metrics["coverage@10"] <= 1 and 0 <= metrics["mrr"] <= 1


def test_eval_refuses_another_catalogue(saved, tmp_path):
    with pytest.raises(CatalogMismatchError, match=r"catalog.json .*vs the data of --dataset synthetic"):
        eval_cli.run(["--model", str(saved), "--synthetic_items", "48", "--output", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()


def test_eval_data_arguments_from_the_saved_source(saved):
    from ilrec_trl.scripts.common import DataArguments
    from ilrec_trl.scripts.saved_data import data_arguments_for

    def resolve(**flags):
        argv = [x for k, v in flags.items() for x in (f"--{k}", str(v))]
        return data_arguments_for(saved, DataArguments(**flags), argv)

    assert resolve().synthetic_items == 32 and resolve().max_history == 20  # as trained
    assert resolve(max_history=5).max_history == 5 and resolve(max_history=5).synthetic_items == 32  # given wins
    other = resolve(dataset="movielens", data_dir="x")  # another source: nothing taken over
    assert other.synthetic_items == DataArguments().synthetic_items and other.data_dir == "x"


def test_hub_pushes_carry_the_artefacts(rec_data, tokenizer, model, args_factory, tmp_path, monkeypatch):
    """`push_to_hub` and the pushes during training upload `output_dir`: both hold the catalogue (the upload is
    recorded instead of sent)."""
    from concurrent.futures import Future

    import transformers.trainer

    uploaded = []

    class FakeApi:
        def upload_folder(self, folder_path, **kwargs):
            uploaded.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
            done = Future()
            done.set_result(None)
            return done

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    args = args_factory(max_steps=2, save_strategy="steps", save_steps=2, output_dir=str(tmp_path / "out"))
    trainer = ILRecTrainer(model, args=args, train_dataset=rec_data.train.select(range(16)),
                           processing_class=tokenizer, catalog=rec_data.catalog,
                           recommender_config=RecommenderConfig.from_rec_data(rec_data))
    trainer.hub_model_id, trainer.push_in_progress = "me/model", None
    trainer.train()
    trainer._push_from_checkpoint(str(tmp_path / "out" / "checkpoint-2"))  # what save_strategy + push_to_hub does
    trainer.push_to_hub(blocking=True)
    assert len(uploaded) == 2
    for files in uploaded:
        assert {"catalog.json", "recommender_config.json", "model.safetensors"} <= set(files)


def test_a_model_trained_on_prompts_as_they_are(saved, rec, tmp_path):
    """A prompt/completion dataset has no template: the model ranks prompts (Python and ilrec-recommend)."""
    import shutil

    from ilrec_trl.data.prompts import format_prompt

    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "recommender_config.json").read_text())
    (folder / "recommender_config.json").write_text(json.dumps({**config, "template": None}))
    plain = Recommender.from_pretrained(folder, device="cpu")
    with pytest.raises(ValueError, match="use recommend_prompts"):
        plain.recommend([[1, 2, 3]])
    prompt = format_prompt([rec.catalog.identifier(i) for i in (1, 2, 3)], "sequence")
    assert plain.recommend_prompts([prompt], k=5) == rec.recommend([[1, 2, 3]], k=5)
    assert plain.recommend_prompts([prompt], k=5, histories=[[1, 2, 3]]) == \
        rec.recommend([[1, 2, 3]], k=5, exclude_seen=True)
    users = write_lines(tmp_path / "users.jsonl", [json.dumps({"user": "a", "prompt": prompt, "history": [1, 2, 3]})])
    rows = recommend_cli.run(["--model", str(folder), "--input", str(users), "--output", str(tmp_path / "r.jsonl"),
                              "--k", "5", "--exclude_seen"])
    assert rows[0]["items"] == [i for i, _ in rec.recommend([[1, 2, 3]], k=5, exclude_seen=True)[0]]
    bad = write_lines(tmp_path / "bad.jsonl", ['{"user": "a", "history": [1]}'])
    with pytest.raises(ValueError, match="bad.jsonl:1: the field 'prompt' is missing .*trained on prompts"):
        recommend_cli.run(["--model", str(folder), "--input", str(bad), "--output", str(tmp_path / "r2.jsonl")])


def test_explicit_flags_include_the_config_file(tmp_path):
    from ilrec_trl.scripts.saved_data import explicit_flags

    config = tmp_path / "c.yaml"
    config.write_text("scheme: title\nmax_history: 5\n")
    assert explicit_flags(["--model", "m", f"--config={config}", "--k", "3"]) == {"model", "config", "scheme",
                                                                                  "max_history", "k"}
    assert explicit_flags(["--config", str(config)]) == {"config", "scheme", "max_history"}
