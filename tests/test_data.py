"""edgetune.data: loading, checking and batching training data, and the resumable order."""

import json
import sys

import numpy as np
import pytest

from edgetune.data import (
    BatchSampler,
    DataError,
    ImageSpec,
    TextSpec,
    build_word_level_tokenizer,
    load_dataset,
    permutation,
    resize,
    split,
)
from edgetune.errors import EdgetuneError, UsageError

PIL = pytest.importorskip("PIL.Image")

TEXTS = ["a great movie", "an awful movie", "great acting and a great plot",
         "awful plot", "not bad at all", "bad bad bad", "a plot", "the end"]


def fails(path, *phrases):
    """Assert the error is a one-line DataError naming ``path`` and every phrase."""
    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(DataError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert isinstance(self.info.value, EdgetuneError)
            assert "\n" not in msg, msg
            assert msg.startswith(f"{path}: "), msg
            for phrase in phrases:
                assert phrase in msg, f"{phrase!r} not in {msg!r}"
            return handled
    return Check()


# ------------------------------------------------------------------ specs

def test_specs_validate_and_normalize():
    s = ImageSpec(image_size=16, channels=3, mean=0.5, std=[0.25], num_classes=4)
    assert s.image_size == (16, 16) and s.mean == (0.5,) * 3 and s.std == (0.25,) * 3
    assert ImageSpec(image_size=(8, 12)).image_size == (8, 12)
    for bad in (dict(image_size=0), dict(channels=2), dict(std=(1.0, 0.0, 1.0)),
                dict(mean=(0.5, 0.5)), dict(num_classes=1), dict(labels=["a", "a"]),
                dict(labels=["a", "b", "c"], num_classes=2), dict(mean=float("nan"))):
        with pytest.raises(UsageError):
            ImageSpec(**bad)
    with pytest.raises(UsageError, match="max_length"):
        TextSpec("tok.json", max_length=1)
    assert TextSpec("t.json").text_columns()[:3] == ("text", "sentence", "review")
    assert TextSpec("t.json", text_column="body").text_columns() == ("body",)


# ------------------------------------------------------------------ npz images

def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_rgb_is_resized_and_normalized(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    x[0] = 255
    p = save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1]))
    ds = load_dataset(p, ImageSpec(image_size=16, num_classes=3))
    b = ds.batch([0, 3])
    assert set(b) == {"pixel_values", "labels"} and len(ds) == 5
    assert b["pixel_values"].shape == (2, 3, 16, 16) and b["pixel_values"].dtype == np.float32
    assert b["labels"].dtype == np.int64 and b["labels"].tolist() == [0, 0]
    np.testing.assert_allclose(b["pixel_values"][0], 1.0, atol=1e-6)  # white: (1 - .5) / .5
    # at the native size, values are exactly (x / 255 - mean) / std, channels first
    same = load_dataset(p, ImageSpec(image_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.4, 0.3),
                                     num_classes=3)).batch([3])["pixel_values"][0]
    want = (x[3].astype(np.float32) / 255 - [0.1, 0.2, 0.3]) / [0.5, 0.4, 0.3]
    np.testing.assert_allclose(same, want.transpose(2, 0, 1), atol=1e-5)


def test_npz_grayscale_repeats_and_float_pixels_match_uint8(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (4, 6, 6), dtype=np.uint8)
    y = np.array([1, 0, 1, 0])
    gray = load_dataset(save_npz(tmp_path / "g.npz", x=x, y=y), ImageSpec(image_size=6))
    pv = gray.batch(range(4))["pixel_values"]
    assert pv.shape == (4, 3, 6, 6)
    assert np.array_equal(pv[:, 0], pv[:, 1]) and np.array_equal(pv[:, 0], pv[:, 2])
    flt = load_dataset(save_npz(tmp_path / "f.npz", x=x.astype(np.float32) / 255, y=y),
                       ImageSpec(image_size=6, channels=1, mean=0.5, std=0.5))
    np.testing.assert_allclose(flt.batch([2])["pixel_values"][0, 0], pv[2, 0], atol=1e-5)


def test_resize_matches_pillow_bilinear():
    rng = np.random.default_rng(2)
    for (h, w), (oh, ow) in (((37, 53), (16, 16)), ((10, 12), (32, 24))):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(PIL.fromarray(a).resize((ow, oh), PIL.BILINEAR), dtype=np.float32)
        ours = resize(a[None], (oh, ow))[0]
        assert ours.shape == (oh, ow, 3) and np.abs(ours - ref).max() <= 1.0  # rounding only


@pytest.mark.parametrize("arrays, phrases", [
    (dict(x=np.zeros((2, 4, 4), np.uint8)), ["no array 'y'", "arrays: x"]),
    (dict(x=np.zeros((2, 4), np.uint8), y=[0, 1]), ["shape (2, 4)", "N×H×W"]),
    (dict(x=np.zeros((2, 3, 8, 8), np.uint8), y=[0, 1]), ["8 channels", "channels-first"]),
    (dict(x=np.zeros((2, 4, 4, 4), np.uint8), y=[0, 1]), ["4 channels, expected 1 or 3"]),
    (dict(x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, int)), ["empty", "0 images"]),
    (dict(x=np.zeros((3, 4, 4), np.uint8), y=[0, 1]), ["2 labels but x has 3 images"]),
    (dict(x=np.zeros((3, 4, 4), np.uint8), y=[0, 5, 1]), ["y[1]", "label 5 out of range [0, 2)"]),
    (dict(x=np.zeros((2, 4, 4), np.uint8), y=[-1, 0]), ["y[0]", "label -1 out of range"]),
    (dict(x=np.zeros((2, 4, 4), np.uint8), y=[0.0, 1.5]), ["non-integer label y[1] = 1.5"]),
    (dict(x=np.zeros((2, 4, 4), np.uint8), y=[0.0, np.nan]), ["NaN/inf labels", "y[1]"]),
    (dict(x=np.array([[[0.5, 0.5]], [[0.5, np.inf]]]), y=[0, 1]), ["1 NaN/inf values", "image 1"]),
    (dict(x=np.full((2, 2, 2), 7.0), y=[0, 1]), ["float x must be in [0, 1]", "uint8"]),
    (dict(x=np.full((2, 2, 2), 300, np.int16), y=[0, 1]), ["values in [300, 300]", "0..255"]),
    (dict(x=np.full((2, 2, 2), "a"), y=[0, 1]), ["dtype <U1"]),
    (dict(x=np.zeros((2, 4, 4), np.uint8), y=np.zeros((2, 2))), ["y has shape (2, 2)"]),
])
def test_npz_errors_name_file_and_problem(tmp_path, arrays, phrases):
    p = save_npz(tmp_path / "bad.npz", **arrays)
    with fails(p, *phrases):
        load_dataset(p, ImageSpec(image_size=4, num_classes=2))


def test_npz_file_level_errors(tmp_path):
    spec = ImageSpec(image_size=4)
    with fails(tmp_path / "nope.npz", "no such file"):
        load_dataset(tmp_path / "nope.npz", spec)
    (tmp_path / "empty.npz").write_bytes(b"")
    with fails(tmp_path / "empty.npz", "empty file"):
        load_dataset(tmp_path / "empty.npz", spec)
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip")
    with fails(tmp_path / "junk.npz", "not a valid .npz"):
        load_dataset(tmp_path / "junk.npz", spec)
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with fails(tmp_path / "one.npz", "single array"):
        load_dataset(tmp_path / "one.npz", spec)
    p = save_npz(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=[0, 1])
    with fails(p, "array 'x' holds Python objects"):
        load_dataset(p, spec)
    p = save_npz(tmp_path / "rgb.npz", x=np.zeros((2, 4, 4, 3), np.uint8), y=[0, 1])
    with fails(p, "3 channels but the model takes 1"):
        load_dataset(p, ImageSpec(image_size=4, channels=1, mean=0.5, std=0.5))


# ------------------------------------------------------------------ image folders

def make_folder(root, classes, size=(10, 7)):
    """``root/<class>/<i>.png``, each class a solid colour (class k: red = 40 * k)."""
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            mode = ("RGB", "L", "RGBA")[i % 3]
            colour = {"RGB": (40 * k, 0, 0), "L": 40 * k, "RGBA": (40 * k, 0, 0, 255)}[mode]
            PIL.new(mode, (size[0] + i, size[1]), colour).save(root / name / f"{i}.png")
    return root


def test_image_folder_classes_sorted_and_decoded(tmp_path):
    root = make_folder(tmp_path / "imgs", {"cat": 2, "dog": 3})
    (root / "dog" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    ds = load_dataset(root, ImageSpec(image_size=8, mean=0.0, std=1.0))
    assert len(ds) == 5 and ds.label_names == ("cat", "dog")
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]
    b = ds.batch([0, 2])
    assert b["pixel_values"].shape == (2, 3, 8, 8) and b["labels"].tolist() == [0, 1]
    np.testing.assert_allclose(b["pixel_values"][1, 0], 40 / 255, atol=1e-6)  # dog's red
    np.testing.assert_allclose(b["pixel_values"][1, 1:], 0.0, atol=1e-6)
    gray = load_dataset(root, ImageSpec(image_size=5, channels=1, mean=0.0, std=1.0))
    assert gray.batch([4])["pixel_values"].shape == (1, 1, 5, 5)
    # the training set's names map a val folder with only some classes the same way
    val = make_folder(tmp_path / "val", {"dog": 1})
    assert load_dataset(val, ImageSpec(image_size=8, labels=ds.label_names)).labels.tolist() == [1]


def test_image_folder_integer_names_are_indices(tmp_path):
    root = make_folder(tmp_path / "digits", {"0": 1, "2": 1})
    ds = load_dataset(root, ImageSpec(image_size=4, num_classes=3))
    assert ds.labels.tolist() == [0, 2] and ds.label_names is None
    with fails(root, "class folder '2'", "label 2 out of range [0, 2)"):
        load_dataset(root, ImageSpec(image_size=4, num_classes=2))


def test_image_folder_errors(tmp_path, monkeypatch):
    spec = ImageSpec(image_size=4)
    (tmp_path / "flat").mkdir()
    with fails(tmp_path / "flat", "no class subfolders"):
        load_dataset(tmp_path / "flat", spec)
    root = make_folder(tmp_path / "a", {"cat": 1})
    (root / "dog").mkdir()
    with fails(root / "dog", "class folder has no images"):
        load_dataset(root, spec)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with fails(root / "dog" / "broken.png", "not a readable image"):
        load_dataset(root, spec)
    many = make_folder(tmp_path / "many", {"a": 1, "b": 1, "c": 1})
    with fails(many, "3 distinct labels", "the model has 2 classes"):
        load_dataset(many, spec)
    with fails(many, "class folder 'c'", "unknown label 'c'", "known: a, b"):
        load_dataset(many, ImageSpec(image_size=4, labels=("a", "b")))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with fails(many, "needs Pillow", ".npz"):
        load_dataset(many, spec)


# ------------------------------------------------------------------ text

@pytest.fixture
def tok_path(tmp_path):
    return build_word_level_tokenizer(TEXTS, tmp_path / "tokenizer.json")


def write_csv(path, header, rows):
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_csv_tokenized_and_padded_per_batch(tmp_path, tok_path):
    from tokenizers import Tokenizer
    rows = [f'"{t}",{i % 2}' for i, t in enumerate(TEXTS)]
    p = write_csv(tmp_path / "d.csv", "text,label", rows)
    ds = load_dataset(p, TextSpec(tok_path, max_length=6, num_classes=2))
    assert len(ds) == 8 and ds.labels.tolist() == [0, 1] * 4 and ds.label_names is None
    tok = Tokenizer.from_file(str(tok_path))
    b = ds.batch([0, 3])  # "a great movie" (5 tokens), "awful plot" (4)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    assert b["input_ids"].dtype == np.int64 and b["attention_mask"].dtype == np.int64
    assert b["input_ids"].shape == (2, 5)
    assert b["input_ids"][0].tolist() == tok.encode(TEXTS[0]).ids
    assert b["input_ids"][1].tolist() == tok.encode(TEXTS[3]).ids + [tok.token_to_id("[PAD]")]
    assert b["attention_mask"].tolist() == [[1] * 5, [1] * 4 + [0]]
    long = ds.batch([2])  # 8 tokens truncated to max_length, still ending in [SEP]
    assert long["input_ids"].shape == (1, 6)
    assert long["input_ids"][0, -1] == tok.token_to_id("[SEP]")
    assert ds.batch([7])["input_ids"].tolist() == [tok.encode("the end").ids]


def test_jsonl_string_labels_vocab_reused_for_val(tmp_path, tok_path):
    recs = [{"sentence": t, "label": ["pos", "neg", "meh"][i % 3]} for i, t in enumerate(TEXTS)]
    train = load_dataset(write_jsonl(tmp_path / "train.jsonl", recs),
                         TextSpec(tok_path, num_classes=3))
    assert train.label_names == ("meh", "neg", "pos")
    assert train.labels.tolist()[:3] == [2, 1, 0]
    val_p = write_jsonl(tmp_path / "val.jsonl", [{"sentence": "great", "label": "pos"}])
    spec = TextSpec(tok_path, num_classes=3, labels=train.label_names)
    assert load_dataset(val_p, spec).labels.tolist() == [2]
    bad = write_jsonl(tmp_path / "v2.jsonl", [{"sentence": "x", "label": "pos"},
                                              {"sentence": "y", "label": "happy"}])
    with fails(bad, "line 2", "unknown label 'happy'", "known: meh, neg, pos"):
        load_dataset(bad, spec)


def test_text_columns_fallback_explicit_and_tsv(tmp_path, tok_path):
    p = write_csv(tmp_path / "r.csv", "id,review,label", ["1,great plot,1", "2,awful,0"])
    assert load_dataset(p, TextSpec(tok_path)).labels.tolist() == [1, 0]
    p = write_csv(tmp_path / "b.tsv", "body\ty", ["great plot\t1", "awful\t0"])
    ds = load_dataset(p, TextSpec(tok_path, text_column="body", label_column="y"))
    assert len(ds) == 2 and ds.batch([1])["input_ids"].shape == (1, 3)


@pytest.mark.parametrize("name, content, phrases", [
    ("a.csv", "words,label\nhi,1\n",
     ["no text column: tried text, sentence", "columns: words, label"]),
    ("b.csv", "text,y\nhi,1\n", ["no label column: tried label", "columns: text, y"]),
    ("c.csv", "text,label\n", ["no rows (only a header)"]),
    ("d.csv", "text,label\nhi,1\nthere,1,2\n", ["line 3: 3 fields, the header has 2"]),
    ("e.csv", "text,label\nhi,1\nthere,1.5\n", ["line 3: non-integer label 1.5"]),
    ("f.csv", "text,label\nhi,nan\n", ["line 2: label is nan (NaN/inf)"]),
    ("g.csv", "text,label\nhi,1\nyo,7\n", ["line 3: label 7 out of range [0, 2)"]),
    ("h.csv", "text,label\nhi,1\n  ,0\n", ["line 3: empty text in column 'text'"]),
    ("i.csv", "text,label\nhi,\n", ["line 2: empty label"]),
    ("j.csv", "text,label\nhi,0\nyo,pos\n", ["line 2: label 0 is a number", "line 3", "'pos'"]),
    ("k.csv", "text,label\na,x\nb,y\nc,z\n", ["3 distinct labels (x, y, z)", "2 classes"]),
    ("l.csv", "\n  \n", ["empty file"]),
    ("a.jsonl", '{"text": "hi", "label": 0}\n{"text": "yo", "label": 1\n',
     ["line 2: not valid JSON"]),
    ("b.jsonl", '{"text": "hi", "label": 0}\n\n[1, 2]\n',
     ["line 3: expected a JSON object", "list"]),
    ("c.jsonl", '{"text": "hi", "label": 0}\n{"text": "yo"}\n',
     ["line 2: no label 'label'", "keys: text"]),
    ("d.jsonl", '{"text": "hi", "label": 1.5}\n', ["line 1: non-integer label 1.5"]),
    ("e.jsonl", '{"text": "hi", "label": NaN}\n', ["line 1: label is nan (NaN/inf)"]),
    ("f.jsonl", '{"text": "hi", "label": true}\n', ["line 1: label True is not an integer"]),
    ("g.jsonl", '{"text": 5, "label": 1}\n', ["line 1: text 'text' is 5, not a string"]),
    ("h.jsonl", '{"txt": "hi", "label": 1}\n', ["no text column", "columns: txt, label"]),
    ("i.jsonl", "\n   \n", ["empty file"]),
    ("j.jsonl", '{"text": "hi", "label": 2.0}\n', ["line 1: label 2 out of range [0, 2)"]),
])
def test_text_errors_name_file_and_problem(tmp_path, tok_path, name, content, phrases):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with fails(p, *phrases):
        load_dataset(p, TextSpec(tok_path, num_classes=2))


def test_text_file_and_tokenizer_errors(tmp_path, tok_path):
    p = write_csv(tmp_path / "ok.csv", "text,label", ["hi,1"])
    (tmp_path / "empty.csv").write_text("")
    with fails(tmp_path / "empty.csv", "empty file"):
        load_dataset(tmp_path / "empty.csv", TextSpec(tok_path))
    (tmp_path / "latin.csv").write_bytes(b"text,label\ncaf\xe9,1\n")
    with fails(tmp_path / "latin.csv", "not UTF-8"):
        load_dataset(tmp_path / "latin.csv", TextSpec(tok_path))
    with fails(tmp_path / "none.json", "no such tokenizer file"):
        load_dataset(p, TextSpec(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text('{"version": "1.0", "model": 5}')
    with fails(tmp_path / "bad.json", "not a valid tokenizer.json"):
        load_dataset(p, TextSpec(tmp_path / "bad.json"))


def test_dispatch_errors(tmp_path, tok_path):
    npz = save_npz(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=[0, 1])
    with fails(npz, ".npz holds images but the model takes text"):
        load_dataset(npz, TextSpec(tok_path))
    with fails(tmp_path, "a folder holds images but the model takes text"):
        load_dataset(tmp_path, TextSpec(tok_path))
    csv = write_csv(tmp_path / "t.csv", "text,label", ["hi,1"])
    with fails(csv, ".csv holds text but the model takes images"):
        load_dataset(csv, ImageSpec())
    (tmp_path / "t.json").write_text("[]")
    with fails(tmp_path / "t.json", "unsupported file type '.json'", ".jsonl"):
        load_dataset(tmp_path / "t.json", TextSpec(tok_path))
    with fails(tmp_path / "missing", "no such file or folder"):
        load_dataset(tmp_path / "missing", ImageSpec())


# ------------------------------------------------------------------ order, resume, split

def test_permutation_is_fixed_across_numpy_versions():
    # our own hash, not numpy.random: these values must never change (resume relies on it)
    assert permutation(10, 0, 0).tolist() == [1, 8, 9, 3, 6, 5, 0, 7, 4, 2]
    assert permutation(10, 1, 0).tolist() == [9, 8, 5, 3, 0, 1, 4, 7, 6, 2]


def test_sampler_epochs_are_permutations():
    s = BatchSampler(10, 3, seed=7)
    assert len(s) == 4
    epochs = [np.concatenate(list(s)) for _ in range(3)]
    assert s.state_dict()["epoch"] == 3 and s.state_dict()["index"] == 0
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))
    assert epochs[0].tolist() != epochs[1].tolist()
    again = BatchSampler(10, 3, seed=7)
    assert [b.tolist() for b in again] == [s.batch_indices(0, i).tolist() for i in range(4)]
    assert [len(b) for b in BatchSampler(10, 3, seed=7, drop_last=True)] == [3, 3, 3]
    assert [b.tolist() for b in BatchSampler(5, 2, shuffle=False)] == [[0, 1], [2, 3], [4]]
    assert BatchSampler(10, 3, seed=8).batch_indices(0, 0).tolist() != epochs[0][:3].tolist()
    with pytest.raises(UsageError, match="no batches"):
        BatchSampler(3, 4, drop_last=True)


def test_resume_from_any_point_gives_the_same_batches_and_weights(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (11, 4, 4), dtype=np.uint8)
    ds = load_dataset(save_npz(tmp_path / "d.npz", x=x, y=np.arange(11) % 2),
                      ImageSpec(image_size=4, channels=1, mean=0.5, std=0.5))

    def step(w, batch):  # a toy SGD step whose result depends on the batch order
        pv = batch["pixel_values"].reshape(len(batch["labels"]), -1)
        return 0.9 * w + 0.1 * (pv.mean(0) * (batch["labels"].mean() + 1))

    epochs = 3
    ref_loader, ref_w, ref_batches = BatchSampler(len(ds), 4, seed=5), np.zeros(16, np.float32), []
    while ref_loader.epoch < epochs:
        for batch in map(ds.batch, ref_loader):
            ref_w = step(ref_w, batch)
            ref_batches.append(batch["labels"].tolist())
    assert len(ref_batches) == 9
    for kill_after in range(len(ref_batches)):
        loader, w, n = BatchSampler(len(ds), 4, seed=5), np.zeros(16, np.float32), 0
        while loader.epoch < epochs and n < kill_after:
            for batch in map(ds.batch, loader):
                w, n = step(w, batch), n + 1
                if n == kill_after:
                    break
        saved = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint stores
        resumed = BatchSampler(len(ds), 4, seed=5)
        resumed.load_state_dict(saved)
        while resumed.epoch < epochs:
            for batch in map(ds.batch, resumed):
                w, n = step(w, batch), n + 1
        assert n == len(ref_batches)
        assert np.array_equal(w, ref_w), f"killed after batch {kill_after}"


def test_resume_rejects_a_different_order():
    s = BatchSampler(10, 3, seed=1)
    state = s.state_dict()
    with pytest.raises(UsageError, match="batch_size=3, this run has batch_size=4"):
        BatchSampler(10, 4, seed=1).load_state_dict(state)
    with pytest.raises(UsageError, match="seed"):
        BatchSampler(10, 3, seed=2).load_state_dict(state)
    with pytest.raises(UsageError, match="index=4"):
        s.load_state_dict({**state, "index": 4})


def test_split_is_seeded_disjoint_and_batches_map_through(tmp_path):
    x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1) * 10
    ds = load_dataset(save_npz(tmp_path / "d.npz", x=x, y=np.arange(20) % 2),
                      ImageSpec(image_size=1, channels=1, mean=0.0, std=1.0))
    train, val = split(ds, 0.25, seed=3)
    assert (len(train), len(val)) == (15, 5)
    assert set(train.indices) | set(val.indices) == set(range(20))
    assert not set(train.indices) & set(val.indices)
    assert split(ds, 0.25, seed=3)[1].indices.tolist() == val.indices.tolist()
    assert split(ds, 0.25, seed=4)[1].indices.tolist() != val.indices.tolist()
    b = val.batch([0, 1])
    want = x[val.indices[:2], 0, 0] / 255
    np.testing.assert_allclose(b["pixel_values"][:, 0, 0, 0], want, atol=1e-6)
    assert b["labels"].tolist() == (val.indices[:2] % 2).tolist()
    assert len(split(ds, 0.001, seed=0)[1]) == 1
    for bad in (0, 1, 1.5, True):
        with pytest.raises(UsageError, match="fraction"):
            split(ds, bad)


# ------------------------------------------------------------------ what loading changes, said

def test_npz_of_odd_images_says_it_resizes_and_repeats_channels(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)  # 7×3 grayscale
    ds = load_dataset(save_npz(tmp_path / "odd.npz", x=x, y=np.zeros(5, np.int64)),
                      ImageSpec(image_size=224, num_classes=2))
    assert len(ds.notes) == 2
    assert "5 of 5 images are not 224×224" in ds.notes[0] and "7×3" in ds.notes[0]
    assert "resized to 224×224" in ds.notes[0]
    assert ds.notes[1] == "images converted to 3 channels (RGB): 5 grayscale"
    assert ds.subset([0, 1]).notes == ds.notes  # a held-out split says the same
    same = np.zeros((2, 8, 8, 3), np.uint8)
    assert load_dataset(save_npz(tmp_path / "ok.npz", x=same, y=np.zeros(2, np.int64)),
                        ImageSpec(image_size=8)).notes == ()


def test_image_folder_says_what_it_resizes_and_converts(tmp_path):
    root = make_folder(tmp_path / "imgs", {"cat": 3})  # 10×7, 11×7, 12×7 (w×h); RGB, L, RGBA
    ds = load_dataset(root, ImageSpec(image_size=(7, 10)))
    assert len(ds.notes) == 2
    assert ds.notes[0].startswith("2 of 3 images are not 7×10") and "7×11" in ds.notes[0]
    assert ds.notes[1] == "images converted to 3 channels (RGB): 1 grayscale, 1 RGBA (alpha dropped)"


def test_texts_cut_to_max_tokens_are_counted(tmp_path, tok_path):
    rows = [f'"{t}",{i % 2}' for i, t in enumerate(TEXTS)]
    p = write_csv(tmp_path / "d.csv", "text,label", rows)
    ds = load_dataset(p, TextSpec(tok_path, max_length=6, num_classes=2))
    long = sum(len(t.split()) + 2 > 6 for t in TEXTS)  # words + [CLS] [SEP] (a word-level tokenizer)
    assert long and ds.notes == (f"{long} of 8 texts are longer than 6 tokens (the bundle's "
                                 f"--max-tokens); each is cut to its first 6",)
    assert load_dataset(p, TextSpec(tok_path, max_length=64, num_classes=2)).notes == ()
