"""The open_clip path on a random-initialised model (no weights can be downloaded here)."""

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("open_clip")
from PIL import Image

from indexer.encoders import ClipEncoder
from indexer.errors import ModelUnavailableError
from retrieval.cli import app

pytestmark = pytest.mark.clip
runner = CliRunner()


def test_images_and_texts_through_open_clip_with_bad_items(tmp_path: Path):
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    for i, color in enumerate([(255, 0, 0), (0, 0, 255), (0, 200, 0)]):
        Image.new("RGB", (40, 40), color).save(pics / "sub" / f"p{i}.png")
    (pics / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (pics / "empty.webp").write_bytes(b"")
    texts = tmp_path / "t.jsonl"
    texts.write_text(
        "\n".join(
            [
                json.dumps({"id": "sub/p0", "text": "a red square", "lang": "en"}),
                json.dumps({"id": "sub/p1", "text": "   "}),
                json.dumps({"id": "sub/p2", "text": "a green square"}),
            ]
        )
    )
    r = runner.invoke(app, ["create", "clip", "--model", "ViT-B-32", "--pretrained", "random-init", "--min-count", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", "clip", "--images", str(pics), "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ingested"] == 3
    reasons = sorted(x["reason"] for x in out["rejected"])
    assert reasons[0].startswith("unreadable image broken.jpg") and "zero-byte" in reasons[1]
    r = runner.invoke(app, ["ingest", "clip", "--texts", str(texts), "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ingested"] == 2
    assert out["rejected"][0]["reason"] == "line 2: empty or missing text"
    r = runner.invoke(app, ["stats", "clip", "--json"])
    st = json.loads(r.stdout)
    assert st["modalities"]["image"]["count"] == 3 and st["modalities"]["text"]["count"] == 2
    r = runner.invoke(app, ["search", "clip", "--text", "a red square", "--k", "2", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["results"]) == 2
    again = runner.invoke(app, ["ingest", "clip", "--images", str(pics), "--json"])
    assert json.loads(again.stdout)["skipped_duplicates"] == 3  # same files, same hashes


def test_unavailable_weights_fail_fast_with_instructions():
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=re.escape("--pretrained /path/to/open_clip_model.pt")):
        ClipEncoder.load("ViT-B-32", "laion2b_s34b_b79k")
    assert time.monotonic() - start < 20  # open_clip alone retries for ~50 s
    with pytest.raises(ModelUnavailableError, match="neither a checkpoint file nor a pretrained tag"):
        ClipEncoder.load("ViT-B-32", "/no/such/file.pt")
    with pytest.raises(ModelUnavailableError, match="open_clip has no model 'NoSuchNet'"):
        ClipEncoder.load("NoSuchNet", "random-init")


def test_model_mismatch_between_collection_and_vectors(tmp_path: Path):
    r = runner.invoke(app, ["create", "m", "--model", "ViT-B-32", "--pretrained", "openai", "--dim", "512"])
    assert r.exit_code == 0
    from indexer.api import Indexer
    from indexer.errors import ConflictError
    from indexer.items import Item
    from indexer.settings import Settings

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    import numpy as np

    with pytest.raises(ConflictError, match="refusing vectors of 'ViT-L-14:openai'"):
        ix.add("m", [Item({"image": np.ones(512)})], model=("ViT-L-14", "openai"))
    ix.close()


def test_images_are_decoded_a_batch_ahead_and_keep_their_places(tmp_path: Path):
    """image_items decodes the next batch on threads while the model runs: ids, rejections
    and vectors must line up with the files, batch boundaries or not."""
    import numpy as np

    from indexer.items import Item
    from indexer.sources import image_items
    from indexer.writer import Rejection

    for i in range(5):
        if i == 3:
            (tmp_path / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
        else:
            Image.new("RGB", (32 + 8 * i, 40), (40 * i, 255 - 40 * i, 90)).save(tmp_path / f"{i}.png")
    enc = ClipEncoder.load("ViT-B-32", "random-init", device="cpu")
    got = list(image_items(tmp_path, enc, batch=2))
    assert [(type(x).__name__, x.id) for x in got] == [
        ("Item", "0"),
        ("Item", "1"),
        ("Item", "2"),
        ("Rejection", "3"),
        ("Item", "4"),
    ]
    rej = got[3]
    assert isinstance(rej, Rejection) and rej.index == 3 and rej.reason.startswith("unreadable image 3.jpg")
    one, bad = enc.encode_images([tmp_path / "4.png"])
    item = got[4]
    assert isinstance(item, Item) and not bad
    assert np.allclose(item.vectors["image"], one[0], atol=1e-5)
