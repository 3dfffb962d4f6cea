import json

import pytest
import torch

from prunekit.data import CalibConfig, load_text, sample_calibration, shared_data_dir
from prunekit.errors import PrunekitError


def chars(text):
    return {"input_ids": [ord(c) % 256 for c in text]}


def test_jsonl_and_txt(text_files):
    src = load_text(str(text_files["jsonl"]))
    assert len(src.documents) == 5 and len(src.sha256) == 64
    assert load_text(str(text_files["txt"])).documents == ("\n\n".join(src.documents),)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    notext = tmp_path / "notext.jsonl"
    notext.write_text(json.dumps({"body": "x"}) + "\n")
    for path, msg in ((empty, "empty"), (notext, "no 'text' field"), (tmp_path / "missing.txt", "not found"),
                      (tmp_path / "x.csv", "unknown data source")):
        with pytest.raises(PrunekitError, match=msg):
            load_text(str(path))


def test_documents_sampling_is_seeded_and_in_range(text_files):
    src = load_text(str(text_files["jsonl"]))
    a = sample_calibration(src, chars, CalibConfig(src.name, 6, 64, seed=1, sampling="documents"))
    b = sample_calibration(src, chars, CalibConfig(src.name, 6, 64, seed=1, sampling="documents"))
    c = sample_calibration(src, chars, CalibConfig(src.name, 6, 64, seed=2, sampling="documents"))
    assert a.shape == (6, 64) and torch.equal(a, b) and not torch.equal(a, c)
    docs = [chars(d)["input_ids"] for d in src.documents]
    for row in a.tolist():  # every window is a contiguous slice of one long document
        assert any(any(d[i : i + 64] == row for i in range(len(d) - 63)) for d in docs if len(d) > 64)


def test_auto_falls_back_to_stream(text_files, caplog):
    src = load_text(str(text_files["jsonl"]))
    with caplog.at_level("INFO"):
        out = sample_calibration(src, chars, CalibConfig(src.name, 8, 2000, seed=0))  # no doc is 2000 chars: stream
    assert out.shape == (8, 2000) and "concatenated stream" in caplog.text


def test_errors(text_files):
    src = load_text(str(text_files["jsonl"]))
    with pytest.raises(PrunekitError, match="nsamples"):
        sample_calibration(src, chars, CalibConfig(src.name, 0, 16, seed=0))
    with pytest.raises(PrunekitError, match="fewer than seqlen"):
        sample_calibration(src, chars, CalibConfig(src.name, 2, 10**6, seed=0))


def test_named_sources_resolve_to_shared_data(monkeypatch, tmp_path):
    (tmp_path / "wikitext2-test.txt").write_text("hello world")
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert load_text("wikitext2").documents == ("hello world",)
