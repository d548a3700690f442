"""Your own data in: interaction tables (CSV/Parquet/JSON), RecBole atomic files, prompt/completion datasets, index
files, and the CLI's data-source flags. Each bad input gives an error naming the file and the field."""

import json
import logging

import pandas as pd
import pytest

from ilrec_trl.catalog import CatalogError
from ilrec_trl.data import (
    DataFormatError,
    load_index_file,
    load_interactions,
    load_prompt_completion_dataset,
    load_recbole,
)
from ilrec_trl.scripts.common import DataArguments, load_data

# user, item, timestamp, rating; written out of time order on purpose
EVENTS = [
    ("u1", "i3", 30, 5), ("u1", "i1", 10, 4), ("u1", "i2", 20, 1), ("u1", "i4", 40, 5),
    ("u2", "i2", 5, 5), ("u2", "i4", 7, 5), ("u2", "i1", 6, 3),
    ("u3", "i1", 1, 5), ("u3", "i2", 2, 5),  # too short: dropped
]
ITEMS = [("i1", "Alpha", "a red guitar"), ("i2", "Beta", "drum sticks"), ("i3", "Gamma", "a blue guitar"),
         ("i4", "Delta", "a capo"), ("i5", "Epsilon", "never rated")]


@pytest.fixture
def tables(tmp_path):
    inter = pd.DataFrame(EVENTS, columns=["user_id", "item_id", "timestamp", "rating"])
    items = pd.DataFrame(ITEMS, columns=["item_id", "title", "text"])
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    inter.to_parquet(tmp_path / "inter.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    return tmp_path


def sequences(data):
    """user -> full chronological sequence, rebuilt from the test split (history + target)."""
    return {r["user_id"]: r["history"] + [r["item_id"]] for r in data.test}


def test_csv_with_item_table(tables, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_interactions(tables / "inter.csv", tables / "items.csv")
    assert data.catalog.identifiers == ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]  # item-table order
    assert data.item_ids == ["i1", "i2", "i3", "i4", "i5"] and data.item_text[0] == "a red guitar"
    assert sequences(data) == {"u1": [0, 1, 2, 3], "u2": [1, 0, 3]}  # ordered by timestamp, not file order
    assert data.test[0]["completion"] == " Delta"  # titles follow the prompt after a space
    assert data.num_dropped_users == 1 and "dropped 1 of 3 users" in caplog.text


def test_parquet_equals_csv_and_no_item_table(tables):
    a = load_interactions(tables / "inter.csv", tables / "items.csv")
    b = load_interactions(tables / "inter.parquet", tables / "items.parquet")
    assert a.catalog.identifiers == b.catalog.identifiers and a.test.to_list() == b.test.to_list()
    bare = load_interactions(tables / "inter.csv")  # the ids seen in the interactions are the identifiers
    assert bare.catalog.identifiers == ["i1", "i2", "i3", "i4"] and bare.item_text is None


def test_min_rating_and_iso_dates(tables):
    data = load_interactions(tables / "inter.csv", tables / "items.csv", min_rating=3)
    assert sequences(data) == {"u1": [0, 2, 3], "u2": [1, 0, 3]}  # u1's rating-1 item i2 is gone
    frame = pd.DataFrame(EVENTS, columns=["user_id", "item_id", "timestamp", "rating"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="D").dt.strftime("%Y-%m-%dT%H:%M:%S")
    frame.to_csv(tables / "dates.csv", index=False)
    dated = load_interactions(tables / "dates.csv", tables / "items.csv")
    assert sequences(dated) == sequences(load_interactions(tables / "inter.csv", tables / "items.csv"))


def test_min_rating_keeps_u1_with_three(tables):
    data = load_interactions(tables / "inter.csv", tables / "items.csv", min_rating=4)
    assert sequences(data) == {"u1": [0, 2, 3]}  # u2 keeps 2 ratings >= 4 and is dropped


def test_index_file_gives_semantic_ids(tables):
    index = {str(i): [f"<a_{i % 2}>", f"<b_{i}>"] for i in range(5)}
    (tables / "items.index.json").write_text(json.dumps(index))
    data = load_interactions(tables / "inter.csv", tables / "items.csv", index_file=tables / "items.index.json")
    assert data.catalog.identifiers[2] == "<a_0><b_2>" and data.catalog.titles[2] == "Gamma"
    assert data.test[0]["completion"] == "<a_1><b_3>"
    del index["4"]
    (tables / "short.index.json").write_text(json.dumps(index))
    with pytest.raises(CatalogError, match="has 4 items but the data has 5"):
        load_interactions(tables / "inter.csv", tables / "items.csv", index_file=tables / "short.index.json")
    (tables / "cut.index.json").write_text(json.dumps(index)[:20])
    with pytest.raises(CatalogError, match="cut.index.json.*not valid JSON"):
        load_index_file(tables / "cut.index.json")
    with pytest.raises(ValueError, match="needs an index file"):
        load_interactions(tables / "inter.csv", scheme="semantic_id")


def test_semantic_ids_in_the_item_table(tables):
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "sid": ["<a_0><b_0>", "<a_0><b_1>", "<a_1><b_0>",
                                                                        "<a_1><b_1>"]})
    items.to_csv(tables / "sid.csv", index=False)
    data = load_interactions(tables / "inter.csv", tables / "sid.csv", identifier_column="sid")
    assert data.test[0]["completion"] == "<a_1><b_1>" and data.catalog.titles is None


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: f.drop(columns=["timestamp"]), r"inter.csv' has no column 'timestamp'"),
        (lambda f: f.assign(item_id=f["item_id"].replace("i4", "i9")), r"column 'item_id': 2 interactions .*\['i9'\]"),
        (lambda f: f.assign(timestamp=f["timestamp"].astype(str).replace("20", "soon")),
         r"column 'timestamp', line 4: 'soon' is neither a number"),
    ],
    ids=["missing-column", "unknown-item", "bad-timestamp"],
)
def test_bad_interactions(tables, mutate, match):
    frame = mutate(pd.read_csv(tables / "inter.csv", dtype=str))
    frame.to_csv(tables / "inter.csv", index=False)
    with pytest.raises(DataFormatError, match=match):
        load_interactions(tables / "inter.csv", tables / "items.csv")


def test_truncated_and_malformed_tables(tables):
    text = (tables / "inter.csv").read_text()
    (tables / "inter.csv").write_text(text[: text.rstrip().rindex(",")])  # the last row loses its rating
    with pytest.raises(DataFormatError, match=r"column 'rating': 1 rows have no value \(first at line 10\).*truncated"):
        load_interactions(tables / "inter.csv", tables / "items.csv", min_rating=1)
    (tables / "cut.parquet").write_bytes((tables / "inter.parquet").read_bytes()[:100])
    with pytest.raises(DataFormatError, match="cut.parquet' cannot be read as parquet"):
        load_interactions(tables / "cut.parquet")
    (tables / "inter.xlsx").write_text("x")
    with pytest.raises(DataFormatError, match="unsupported format '.xlsx'"):
        load_interactions(tables / "inter.xlsx")
    pd.DataFrame(ITEMS + ITEMS[:1], columns=["item_id", "title", "text"]).to_csv(tables / "dup.csv", index=False)
    with pytest.raises(DataFormatError, match="dup.csv', column 'item_id': item 'i1' appears more than once"):
        load_interactions(tables / "inter.parquet", tables / "dup.csv")
    with pytest.raises(DataFormatError, match="items.csv' has no column 'name'"):
        load_interactions(tables / "inter.parquet", tables / "items.csv", identifier_column="name")


def test_bad_value_locations_after_filtering(tables):
    frame = pd.read_csv(tables / "inter.csv", dtype=str)
    frame.loc[8, "timestamp"] = "later"  # u3's second row, file line 10, kept by the rating filter
    frame.to_csv(tables / "inter.csv", index=False)
    with pytest.raises(DataFormatError, match="column 'timestamp', line 10: 'later'"):
        load_interactions(tables / "inter.csv", min_rating=4)
    frame.to_parquet(tables / "inter.parquet")
    with pytest.raises(DataFormatError, match="column 'timestamp', row 9: 'later'"):
        load_interactions(tables / "inter.parquet", min_rating=4)


def test_too_few_interactions_error_counts_users(tables):
    with pytest.raises(ValueError, match="all 3 users have fewer than 5 interactions"):
        load_interactions(tables / "inter.csv", tables / "items.csv", min_interactions=5)


# -- RecBole atomic files ------------------------------------------------------------------------------------------
def write_recbole(folder, inter_header="user_id:token\titem_id:token\trating:float\ttimestamp:float",
                  item_header="item_id:token\tmovie_title:token_seq\trelease_year:token"):
    rows = "\n".join(f"{u}\t{i}\t{r}\t{t}" for u, i, t, r in EVENTS)
    (folder / "toy.inter").write_text(f"{inter_header}\n{rows}\n")
    items = "\n".join(f"{i}\t{title} \"{text}\"\t1999" for i, title, text in ITEMS)  # quotes are plain text
    (folder / "toy.item").write_text(f"{item_header}\n{items}\n")
    return folder / "toy.inter"


def test_recbole_matches_csv(tables):
    data = load_recbole(write_recbole(tables))
    assert data.catalog.identifiers[0] == 'Alpha "a red guitar"'  # movie_title picked, the .item beside the .inter
    assert sequences(data) == sequences(load_interactions(tables / "inter.csv", tables / "items.csv"))
    assert data.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    no_time = write_recbole(tables, inter_header="user_id:token\titem_id:token\trating:float\tstamp:float")
    assert sequences(load_recbole(no_time))["u1"] == [2, 0, 1, 3]  # file order without a timestamp field


@pytest.mark.parametrize(
    "inter_header, item_header, match",
    [
        ("user_id\titem_id:token\trating:float\ttimestamp:float", None, r"toy.inter'.*malformed header field 'user_id'"),
        ("user_id:token\titem_id:tok\trating:float\ttimestamp:float", None, r"malformed header field 'item_id:tok'"),
        ("user:token\titem_id:token\trating:float\ttimestamp:float", None, r"toy.inter' has no column 'user_id'"),
        (None, "item_id:token\tgenre:token_seq\tyear:token", r"toy.item' has none of the title fields"),
    ],
    ids=["no-type", "unknown-type", "missing-user-field", "no-title-field"],
)
def test_recbole_bad_headers(tables, inter_header, item_header, match):
    kwargs = {k: v for k, v in (("inter_header", inter_header), ("item_header", item_header)) if v}
    with pytest.raises(DataFormatError, match=match):
        load_recbole(write_recbole(tables, **kwargs))


def test_recbole_truncated_and_unknown_items(tables):
    path = write_recbole(tables)
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rindex("\t")])  # the last row loses its timestamp
    with pytest.raises(DataFormatError, match=r"toy.inter', column 'timestamp': 1 rows have no value.*truncated"):
        load_recbole(path)
    path = write_recbole(tables)
    (tables / "toy.item").write_text("item_id:token\ttitle:token_seq\ni1\tAlpha\n")
    with pytest.raises(DataFormatError, match=r"toy.inter', column 'item_id': 6 interactions .* not in the item table"):
        load_recbole(path)
    (tables / "toy.item").write_text("item_id:token\ttitle:token_seq\n")
    with pytest.raises(DataFormatError, match="toy.item' has a header but no rows"):
        load_recbole(path)


# -- prompt/completion datasets ------------------------------------------------------------------------------------
def rows(n_users=4, semantic=False):
    out = []
    for u in range(n_users):
        items = [f"<a_{(u + k) % 3}><b_{k}>" if semantic else f"Movie {u + k}" for k in range(4)]
        for k in range(1, 4):
            prompt = "History: " + ", ".join(items[:k]) + ". Next:"
            out.append({"user_id": f"u{u}", "prompt": prompt, "completion": " " + items[k]})
    return out


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_prompt_completion_train_only_holds_out_per_user(tmp_path):
    data = load_prompt_completion_dataset(str(write_jsonl(tmp_path / "recs.jsonl", rows())))
    assert len(data.train) == 4 and len(data.valid) == 4 and len(data.test) == 4
    assert data.completion_prefix == " " and data.catalog.identifiers[0] == "Movie 1"  # "Movie 0" is never a completion
    last = data.test.filter(lambda r: r["user_id"] == "u2")[0]
    assert data.catalog.identifier(last["item_id"]) == "Movie 5" and last["completion"] == " Movie 5"
    assert last["history"] == []  # titles: no history can be read from the prompt


def test_prompt_completion_splits_and_semantic_histories(tmp_path, caplog):
    records = rows(semantic=True)
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", records[:9])
    write_jsonl(folder / "test.jsonl", records[9:])
    with caplog.at_level(logging.WARNING):
        data = load_prompt_completion_dataset(str(folder))
    assert len(data.train) == 9 and len(data.test) == 3 and len(data.valid) == 0
    row = data.test[2]  # prompt: <a_0><b_0>, <a_1><b_1>, <a_2><b_2>; the first is no completion, so no item
    assert [data.catalog.identifier(i) for i in row["history"]] == ["<a_1><b_1>", "<a_2><b_2>"]
    assert "12 history identifiers in the prompts are not in the catalogue" in caplog.text
    assert data.completion_prefix == " " and data.catalog.titles is None
    from datasets import Dataset, DatasetDict

    DatasetDict(train=Dataset.from_list(records[:9]), test=Dataset.from_list(records[9:])).save_to_disk(tmp_path / "d")
    saved = load_prompt_completion_dataset(str(tmp_path / "d"))
    assert saved.test.to_list() == data.test.to_list()


def test_prompt_completion_item_table(tmp_path):
    path = write_jsonl(tmp_path / "recs.jsonl", rows())
    titles = [f"Movie {i}" for i in range(8)]
    pd.DataFrame({"item_id": range(8), "title": titles}).to_csv(tmp_path / "items.csv", index=False)
    data = load_prompt_completion_dataset(str(path), items_file=tmp_path / "items.csv")
    assert data.catalog.identifiers == titles and data.item_ids == [str(i) for i in range(8)]
    pd.DataFrame({"item_id": range(3), "title": titles[:3]}).to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(DataFormatError, match=r"'completion': \d+ completions are not items of the item table"):
        load_prompt_completion_dataset(str(path), items_file=tmp_path / "few.csv")


def test_prompt_completion_bad_inputs(tmp_path):
    bad = [{k: v for k, v in r.items() if k != "completion"} | {"answer": r["completion"]} for r in rows()]
    with pytest.raises(DataFormatError, match=r"split 'train': no column 'completion'"):
        load_prompt_completion_dataset(str(write_jsonl(tmp_path / "a.jsonl", bad)))
    convo = [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "x"}]}]
    with pytest.raises(DataFormatError, match="conversational"):
        load_prompt_completion_dataset(str(write_jsonl(tmp_path / "b.jsonl", convo * 3)))
    no_users = [{k: v for k, v in r.items() if k != "user_id"} for r in rows()]
    with pytest.raises(DataFormatError, match="no 'test' split and its train split no 'user_id' column"):
        load_prompt_completion_dataset(str(write_jsonl(tmp_path / "c.jsonl", no_users)))
    text = write_jsonl(tmp_path / "d.jsonl", rows()).read_text()
    (tmp_path / "d.jsonl").write_text(text[:-30])
    with pytest.raises(DataFormatError, match="d.jsonl.*cannot be loaded"):
        load_prompt_completion_dataset(str(tmp_path / "d.jsonl"))
    with pytest.raises(DataFormatError, match="all 4 users in column 'user_id' have fewer than 3 rows"):
        load_prompt_completion_dataset(str(write_jsonl(tmp_path / "e.jsonl", rows()[::2])))


# -- CLI data-source flags -----------------------------------------------------------------------------------------
def test_dataset_name_flag_resolution(tmp_path):
    assert DataArguments().dataset == "synthetic"
    hf = DataArguments(dataset_name=str(write_jsonl(tmp_path / "r.jsonl", rows())))
    assert hf.dataset == "hf" and len(load_data(hf).test) == 4
    with pytest.warns(FutureWarning, match="use --lcrec_prefix Instruments"):
        old = DataArguments(dataset="lcrec", dataset_name="Instruments")
    assert old.lcrec_prefix == "Instruments" and old.dataset_name is None
    assert DataArguments(dataset="lcrec").lcrec_prefix == "Instruments"
    with pytest.raises(ValueError, match="disagree"):
        DataArguments(dataset="lcrec", dataset_name="Games", lcrec_prefix="Instruments")
    with pytest.raises(ValueError, match="--dataset_config is the configuration of a --dataset_name"):
        DataArguments(dataset="synthetic", dataset_config="en")
    with pytest.raises(ValueError, match="--dataset_name names a Hugging Face dataset, but --dataset is movielens"):
        DataArguments(dataset="movielens", dataset_name="x")


def test_cli_dispatch_tables_and_recbole(tables):
    args = DataArguments(dataset="interactions", interactions_file=str(tables / "inter.csv"),
                         items_file=str(tables / "items.csv"))
    assert load_data(args).catalog.identifiers[0] == "Alpha"
    frame = pd.read_csv(tables / "inter.csv").drop(columns=["timestamp"])
    frame.to_csv(tables / "untimed.csv", index=False)
    untimed = DataArguments(dataset="interactions", interactions_file=str(tables / "untimed.csv"), time_column="")
    assert sequences(load_data(untimed))["u1"] == [2, 0, 1, 3]  # i3, i1, i2, i4: the file order
    rb = DataArguments(dataset="recbole", interactions_file=str(write_recbole(tables)), min_rating=4)
    assert sequences(load_data(rb)) == {"u1": [0, 2, 3]}
    with pytest.raises(ValueError, match="--index_file is for movielens"):
        load_data(DataArguments(dataset="lcrec", index_file="x.json"))
    with pytest.raises(ValueError, match="--index_file given with no --dataset"):  # the files would be unread
        DataArguments(index_file="x.json")


TRAIN_QUICK = ["--method", "sft", "--max_steps", "2", "--eval_max_users", "2", "--eval_num_beams", "4",
               "--per_device_train_batch_size", "4", "--tiny_layers", "1", "--tiny_hidden_size", "16",
               "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true"]


def test_train_cli_on_own_data(tmp_path, tables):
    """`ilrec-train --dataset_name FILE` (TRL's meaning) and `--dataset interactions --index_file` train and evaluate."""
    from ilrec_trl.scripts import train as train_cli

    recs = write_jsonl(tmp_path / "recs.jsonl", rows(n_users=6, semantic=True))
    [result] = train_cli.run(["--dataset_name", str(recs), "--output_dir", str(tmp_path / "hf"), *TRAIN_QUICK])
    assert result["num_users"] == 2 and 0 <= result["hit@1"] <= 1
    index = {str(i): [f"<a_{i % 2}>", f"<b_{i}>"] for i in range(5)}
    (tables / "items.index.json").write_text(json.dumps(index))
    [result] = train_cli.run(["--dataset", "interactions", "--interactions_file", str(tables / "inter.csv"),
                              "--items_file", str(tables / "items.csv"), "--index_file",
                              str(tables / "items.index.json"), "--output_dir", str(tmp_path / "csv"), *TRAIN_QUICK])
    assert result["num_users"] == 2
