import pytest
import torch

from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.data.sources import (
    DATA_DIR_ENV,
    DataFormatError,
    DataSourceError,
    load_splits,
    read_split_file,
    resolve_data_dir,
)
from emotion_lab.labels import LABELS
from tests.conftest import write_split_files


def test_label_ids_are_the_hub_order():
    assert LABELS == ("sadness", "joy", "love", "anger", "fear", "surprise")


def test_read_split_file_maps_labels_and_keeps_semicolons_in_text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("i feel sad;sadness\ni love you; truly;love\n\ni am so angry ;anger\n")
    result = read_split_file(path)
    assert result.texts == ["i feel sad", "i love you; truly", "i am so angry"]
    assert result.labels == [0, 2, 3]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("i feel sad sadness", "no ';'"),
        ("i feel sad;melancholy", "unknown label 'melancholy'"),
        (" ;joy", "empty text"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "val.txt"
    path.write_text(f"i feel fine;joy\n{line}\n")
    with pytest.raises(DataFormatError, match=rf"val.txt:2: {problem}"):
        read_split_file(path)
    skipped = read_split_file(path, on_bad_line="skip")
    assert skipped.labels == [1] and len(skipped.skipped) == 1 and "val.txt:2" in skipped.skipped[0]


def test_invalid_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "test.txt"
    path.write_bytes(b"i feel \xff;joy\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8"):
        read_split_file(path)


@pytest.mark.parametrize("on_bad_line", ["error", "skip"])
def test_lines_end_at_newline_only(tmp_path, on_bad_line):
    path = tmp_path / "train.txt"
    # U+2028, U+0085, a form feed and a lone \r are inside sentences; CRLF ends a line like LF.
    path.write_bytes("i feel\u2028sad;sadness\r\nso\x85happy\x0ctoday;joy\nwow\ra;surprise\n\ni; love;love".encode())
    result = read_split_file(path, on_bad_line=on_bad_line)
    assert result.texts == ["i feel\u2028sad", "so\x85happy\x0ctoday", "wow\ra", "i; love"]
    assert result.labels == [0, 1, 5, 2] and result.skipped == []


def test_a_bad_line_after_unicode_line_breaks_has_its_own_number(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("a\u2028b;joy\r\nc\x85d\x0ce;joy\nno label here\r\n".encode())
    with pytest.raises(DataFormatError, match=r"train.txt:3: no ';' separating text and label in 'no label here' \("):
        read_split_file(path)
    skipped = read_split_file(path, on_bad_line="skip")
    assert skipped.texts == ["a\u2028b", "c\x85d\x0ce"] and skipped.skipped == [
        f"{path}:3: no ';' separating text and label"
    ]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_invalid_utf8_names_line_and_byte_counting_a_bom(tmp_path, bom):
    path = tmp_path / "test.txt"
    path.write_bytes(bom + b"i feel fine;joy\r\nok;sad\xffness\n")
    offset = len(bom) + len(b"i feel fine;joy\r\nok;sad")
    with pytest.raises(DataFormatError, match=rf"test.txt:2: not valid UTF-8 \(invalid start byte at byte {offset}\)$"):
        read_split_file(path, on_bad_line="skip")
    path.write_bytes(bom + b"i feel fine;joy\n")
    assert read_split_file(path).texts == ["i feel fine"]  # the mark is not part of the first sentence


def test_explicit_missing_dir_is_an_error_not_a_hub_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.dir"):
        resolve_data_dir(tmp_path / "nope")


def test_env_var_then_fallback_dirs(tmp_path, monkeypatch, data_dir):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir(None, [tmp_path / "empty", data_dir]) == data_dir.resolve()
    other = write_split_files(tmp_path / "other", (6, 6, 6))
    monkeypatch.setenv(DATA_DIR_ENV, str(other))
    assert resolve_data_dir(None, [data_dir]) == other


def test_offline_without_local_copy_says_what_to_set(monkeypatch, tmp_path):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataSourceError, match=rf"data.dir=.*{DATA_DIR_ENV}"):
        load_splits(None, [tmp_path / "nothing-here"])


@pytest.fixture
def datamodule(data_dir, tiny_encoder):
    dm = EmotionDataModule(tiny_encoder, dir=str(data_dir), batch_size=8, eval_batch_size=5)
    dm.setup()
    return dm


def test_datamodule_splits_and_labels(datamodule):
    assert {k: len(v) for k, v in datamodule.datasets.items()} == {"train": 60, "validation": 24, "test": 24}
    labels = datamodule.datasets["train"].with_format(None)["label"]
    # The synthetic files cycle through the labels in id order.
    assert labels[:6] == [0, 1, 2, 3, 4, 5]
    assert datamodule.class_counts == [10] * 6


def test_batches_are_padded_per_batch_with_a_matching_mask(datamodule):
    pad_id = datamodule.tokenizer.pad_token_id
    for batch in datamodule.val_dataloader():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(1)
        assert ids.shape[1] == lengths.max()  # padded to the longest in this batch, not max_length
        assert (ids[mask == 0] == pad_id).all()
        assert mask[torch.arange(len(ids)), lengths - 1].all()  # right padding: real tokens first


def test_eval_examples_come_in_the_test_loaders_order(datamodule, data_dir):
    examples = datamodule.eval_examples("test")
    texts = [text for text, _ in examples]
    lines = (data_dir / "test.txt").read_text().splitlines()
    label_of = {line.rsplit(";", 1)[0]: LABELS.index(line.rsplit(";", 1)[1]) for line in lines}
    ids, labels = [], []
    for batch in datamodule.test_dataloader():
        ids += [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
        labels += batch["labels"].tolist()
    in_file = [line.rsplit(";", 1)[0] for line in lines]
    assert sorted(texts) == sorted(in_file) and texts != in_file  # all of them, reordered by length
    assert ids == [datamodule.tokenizer(text)["input_ids"] for text in texts]
    assert labels == [label_of[text] for text in texts] == [label for _, label in examples]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_every_example_is_seen_exactly_once_per_epoch(datamodule, split):
    loader = {
        "train": datamodule.train_dataloader,
        "validation": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }[split]()
    labels = torch.cat([b["labels"] for b in loader])
    assert sorted(labels.tolist()) == sorted(datamodule.datasets[split].with_format(None)["label"])


def test_training_order_is_seeded_and_changes_between_epochs(data_dir, tiny_encoder):
    def epoch_orders(seed):
        dm = EmotionDataModule(tiny_encoder, dir=str(data_dir), batch_size=8, seed=seed)
        dm.setup()
        loader = dm.train_dataloader()
        return [torch.cat([b["input_ids"].sum(1) for b in loader]).tolist() for _ in range(2)]

    first, second = epoch_orders(1)
    assert first != second
    assert epoch_orders(1) == [first, second]


@pytest.mark.parametrize("group_by_length", [True, False])
def test_epoch_order_depends_on_seed_and_epoch_only(data_dir, tiny_encoder, group_by_length):
    """What exact resume needs: a loader built afresh (as after a restart) gives epoch e the same order."""
    dm = EmotionDataModule(tiny_encoder, dir=str(data_dir), batch_size=8, group_by_length=group_by_length)
    dm.setup()
    running = dm.train_dataloader().sampler
    orders = []
    for epoch in range(3):
        running.set_epoch(epoch)
        orders.append(list(running))
    assert orders[0] != orders[1] != orders[2]
    fresh = dm.train_dataloader().sampler
    fresh.set_epoch(2)
    assert list(fresh) == orders[2]


def test_spelling_reads_evaluation_sentences_and_leaves_training_ones(tmp_path, tiny_encoder):
    folder = write_split_files(tmp_path / "data")
    for name in ("val.txt", "test.txt"):
        with open(folder / name, "a") as file:
            file.write("i feel scaerd today;fear\n")
    extra = folder / "extra.txt"
    extra.write_text("i am so scaerd;fear\n")
    dm = EmotionDataModule(tiny_encoder, dir=str(folder), spelling=True, extra_eval={"mine": str(extra)})
    dm.setup()
    written = [line.rpartition(";")[0] for line in (folder / "train.txt").read_text().splitlines()]
    assert dm.datasets["train"].with_format(None)["text"] == written  # the dictionary itself
    for split in ("validation", "test"):
        read = " | ".join(dm.datasets[split].with_format(None)["text"])
        assert "scaerd" not in read and "scared" in read, split
    assert dm.tokenizer.decode(dm.extra["mine"][0]["input_ids"], skip_special_tokens=True) == "i am so scared"
    # The checkpoint carries the dictionary; resuming takes only the epoch position back from it.
    state = dm.state_dict()
    assert state["spelling_words"]["scared"] > 0 and "scaerd" not in state["spelling_words"]
    dm.load_state_dict(state)
    assert dm._resume is None
    plain = EmotionDataModule(tiny_encoder, dir=str(folder))
    plain.setup()
    assert plain.spelling is None and plain.state_dict() == {}
    assert "scaerd" in " ".join(plain.datasets["test"].with_format(None)["text"])
