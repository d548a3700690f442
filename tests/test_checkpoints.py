"""`ilrec_trl.checkpoints`: the latest complete `checkpoint-N`, where `get_last_checkpoint` takes the highest N."""

from transformers.trainer_utils import get_last_checkpoint

from ilrec_trl.checkpoints import is_complete_checkpoint, last_complete_checkpoint


def make(root, name, state):
    folder = root / name
    folder.mkdir()
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_latest_complete_checkpoint_by_step_number_not_by_name(tmp_path):
    make(tmp_path, "checkpoint-9", '{"global_step": 9}')
    make(tmp_path, "checkpoint-10", '{"global_step": 10}')   # "10" < "9" as text: the step number decides
    make(tmp_path, "checkpoint-12", '{"global_st')           # torn while written
    make(tmp_path, "checkpoint-14", None)                    # killed before its state was written
    make(tmp_path, "checkpoint-16", '[]')                    # parses but is not a trainer state
    make(tmp_path, "checkpoint-final", '{"global_step": 99}')  # not a checkpoint-N folder
    (tmp_path / "checkpoint-20").write_text("a file, not a folder")
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-16")  # what the library replaces
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert [is_complete_checkpoint(tmp_path / f"checkpoint-{n}") for n in (9, 10, 12, 14, 16)] == \
        [True, True, False, False, False]


def test_no_complete_checkpoint_or_no_folder_is_none(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    assert last_complete_checkpoint(tmp_path) is None
    make(tmp_path, "checkpoint-3", "")
    assert last_complete_checkpoint(tmp_path) is None
