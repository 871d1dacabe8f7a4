"""`tidlc tune` (issue 14, item 4): the Pareto table, the choice, and a config `tidlc compile` accepts."""
from __future__ import annotations

import json



def test_tune_prints_the_front_writes_the_choice_and_the_config_compiles(cli, tmp_path, small_caffe_net):
    model = tmp_path / "net.prototxt"
    model.write_text(small_caffe_net)
    out = tmp_path / "tuned"
    code, text, err = cli("tune", model, "--random-weights", "3", "--min-snr", "40", "-o", out, "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["schema"] == "tidlc.tune/1" and len(doc["trials"]) == 5
    assert any(t["pareto"] for t in doc["trials"])
    by = {t["config"]: t for t in doc["trials"]}
    assert by["-O2 16-bit"]["snr_db"] > by["-O2 8-bit"]["snr_db"]
    assert by["-O2 16-bit"]["weight_bytes"] > by["-O2 8-bit"]["weight_bytes"]
    chosen = doc["chosen"]
    assert chosen["snr_db"] >= 40
    assert all(t["ms"] >= chosen["ms"] for t in doc["trials"] if t["snr_db"] >= 40)
    assert (out / "net.bin").exists() and (out / "tune_import.txt").exists() and (out / "tune.sh").exists()
    assert f"-O{chosen['opt_level']}" in doc["command"]
    code, _, err = cli("compile", out / "tune_import.txt", f"-O{chosen['opt_level']}", "-o", tmp_path / "again")
    assert code == 0, err
    assert (tmp_path / "again" / "net.bin").exists()


def test_an_unreachable_target_picks_the_most_accurate(cli, tmp_path, small_caffe_net):
    model = tmp_path / "net.prototxt"
    model.write_text(small_caffe_net)
    code, text, err = cli("tune", model, "--random-weights", "3", "--min-snr", "500", "-o", tmp_path / "t")
    assert code == 0, err
    assert "no configuration meets the targets" in text and "<- chosen" in text
