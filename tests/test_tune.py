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
    assert doc["schema"] == "tidlc.tune/1" and len(doc["trials"]) == 6
    assert any(t["pareto"] for t in doc["trials"])
    by = {t["config"]: t for t in doc["trials"]}
    # automatic mixed precision is searched at two time budgets, within each
    for budget in (1.1, 1.2):
        auto = by[f"-O3 8-bit + auto 16-bit x{budget:g}"]
        assert auto["mixed_precision"] == "auto" and auto["time_budget"] == budget
        assert auto["mixed"].startswith("mixed precision:")
        assert auto["ms"] <= budget * by["-O3 8-bit"]["ms"] * (1 + 1e-6)
        assert auto["snr_db"] >= by["-O3 8-bit"]["snr_db"] - 1e-6
        assert len(auto["layers_16bit"]) == int(auto["mixed"].split(":")[1].split()[0])
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


def test_fps_target_adds_the_budget_that_meets_it(cli, tmp_path, small_caffe_net):
    from tidlc.tune import fps_budget
    assert fps_budget(10.0, 50.0) == 2.0 and fps_budget(10.0, 120.0) is None and fps_budget(10.0, None) is None
    model = tmp_path / "net.prototxt"
    model.write_text(small_caffe_net)
    code, text, err = cli("tune", model, "--random-weights", "3", "-o", tmp_path / "t", "--json")
    assert code == 0, err
    ms8 = {t["config"]: t for t in json.loads(text)["trials"]}["-O3 8-bit"]["ms"]
    fps = 1000.0 / (ms8 * 1.5)  # a target that allows 1.5x the 8-bit time
    code, text, err = cli("tune", model, "--random-weights", "3", "--fps", f"{fps:.6f}", "-o", tmp_path / "u",
                          "--json")
    assert code == 0, err
    doc = json.loads(text)
    auto = [t for t in doc["trials"] if t["time_budget"] and t["time_budget"] not in (1.1, 1.2)]
    assert len(auto) == 1 and abs(auto[0]["time_budget"] - 1.5) < 0.01
    assert auto[0]["fps"] >= fps * (1 - 1e-6)
    code, text, err = cli("tune", model, "--random-weights", "3", "-o", tmp_path / "v")
    assert code == 0, err
    assert "auto 16-bit x1.2: mixed precision:" in text and "16-bit" in text.splitlines()[2]


def test_import_config_says_when_O3_chose_per_channel_depthwise(tmp_path):
    """-O3's weights check may choose per-channel depthwise scales; the import config then sets
    calibrationOption bit 8, so TI's importer quantizes those layers the same way."""
    from tidlc.config import CompileOptions
    from tidlc.tune import Config, Trial, import_config_text
    options = CompileOptions.of(calib_method="histogram")
    for weights, option in (("gptq + per-channel depthwise, not equalized", 9), ("gptq, equalized", 1), ("", 1)):
        trial = Trial(Config("-O3 8-bit", 3, 8), 1.0, 30.0, 100, weights=weights,
                      per_channel_depthwise="per-channel" in weights)
        text = import_config_text("model.onnx", options, trial, str(tmp_path))
        assert f"calibrationOption = {option}\n" in text, text
        assert ("bit 8" in text) == (option == 9)


def test_import_config_and_command_keep_bias_calibration(tmp_path):
    """The bias calibration the chosen trial's graph has (-O3: at 16 bits, and at 8 where its check
    kept it; else as asked) is calibrationOption bit 4 in the config; an explicit
    --bias-calibration (0: off) stays on the command line."""
    from tidlc.config import CompileOptions
    from tidlc.tune import Config, Trial, command_line, import_config_text
    for asked, level, bits, had, option in ((None, 2, 16, 0, 1), (None, 3, 16, 50, 5), (None, 3, 8, 0, 1),
                                            (None, 3, 8, 50, 5), (0, 3, 16, 0, 1), (9, 2, 8, 9, 5)):
        options = CompileOptions.of(calib_method="histogram", bits=bits,
                                    **({} if asked is None else {"bias_calibration": asked}))
        trial = Trial(Config(f"-O{level} {bits}-bit", level, bits), 1.0, 30.0, 100, bias_calibration=had)
        text = import_config_text("model.onnx", options, trial, str(tmp_path))
        assert f"calibrationOption = {option}\n" in text, text
        assert ("biasCalibrationIterations = " + str(had) + "\n" in text) == (option == 5), text
        command = command_line("model.onnx", options, trial, str(tmp_path))
        assert ("--bias-calibration" in command) == (asked is not None), command


def test_the_command_line_carries_every_option_the_trials_were_measured_with(tmp_path):
    """`tidlc tune MODEL --device am62a --deny-op-type detection_output ...` wrote a command without
    the device, the deny list, the resize/crop or the input layout: run as told, it compiled another
    model than the one tuned. The command parses back to the same options (the trial's own aside)."""
    import shlex

    from tidlc.cli import build_parser
    from tidlc.cli_options import options_from_args
    from tidlc.tune import Config, Trial, command_line
    argv = ["tune", "model.onnx", "--device", "am62a", "--deny-op-type", "detection_output,softmax",
            "--deny-op-name", "conv9", "--max-subgraphs", "3", "--min-subgraph-ops", "2", "--no-host",
            "--format", "onnx", "--input-layout", "NHWC", "--input-shape", "x=1,3,64,64", "--resize", "80,72",
            "--crop", "64,64", "--mean", "127.5", "--scale", "0.0078125", "--channel-order", "bgr",
            "--quant-style", "p2", "--percentile", "0.1", "--per-channel-depthwise", "--weight-rounding", "gptq",
            "--16bit-layers", "conv1", "--calib", "calib.txt", "--calib-frames", "8", "--random-weights", "3"]
    parser = build_parser()
    asked = options_from_args(parser.parse_args(argv))
    trial = Trial(Config("-O3 8-bit", 3, 8), 1.0, 30.0, 100)
    command = shlex.split(command_line("model.onnx", asked, trial, str(tmp_path)))
    assert command[:2] == ["tidlc", "compile"]
    again = options_from_args(parser.parse_args(command[1:]))
    for group in ("load", "preprocess"):
        assert getattr(again, group) == getattr(asked, group), group
    for name in ("device", "deny_op_types", "deny_op_names", "max_subgraphs", "min_subgraph_ops"):
        assert getattr(again.target, name) == getattr(asked.target, name), name
    for name in ("quant_style", "percentile", "per_channel_depthwise", "weight_rounding", "layers_16bit", "calib",
                 "calib_frames", "calib_method"):
        assert getattr(again.quant, name) == getattr(asked.quant, name), name


def test_the_import_config_keeps_device_resize_and_layout_and_names_what_it_cannot(tmp_path):
    from tidlc.config import CompileOptions
    from tidlc.import_config import load_import_config
    from tidlc.tune import Config, Trial, import_config_text
    options = CompileOptions.of(device="am62a", resize=(80, 72), input_layout="NHWC", deny_op_types=("softmax",),
                                input_shapes={"x": (1, 3, 64, 64)})
    trial = Trial(Config("-O2 8-bit", 2, 8), 1.0, 30.0, 100)
    (tmp_path / "model.onnx").write_bytes(b"")
    text = import_config_text(str(tmp_path / "model.onnx"), options, trial, str(tmp_path / "out"))
    assert "deviceName = 4\n" in text and "resizeWidth = 80\nresizeHeight = 72\n" in text and "inLayout = 1\n" in text
    assert "# --deny-op-type: no TIDL import key; tune.sh's command line keeps them" in text
    (tmp_path / "tune_import.txt").write_text(text)
    back = load_import_config(str(tmp_path / "tune_import.txt"), quiet=True).compile_options()
    assert back.target.device == "am62a" and back.preprocess.resize == (80, 72) and back.load.input_layout == "NHWC"
    assert back.preprocess.crop == (64, 64)  # inWidth/inHeight with a resize: TIDL's centre crop


def test_the_default_floor_is_30_db():
    """Without --min-snr the fastest row used to win whatever it lost (a ViT's 8-bit at 15.5 dB)."""
    from tidlc.cli import build_parser
    from tidlc.tune import choose
    assert build_parser().parse_args(["tune", "m.onnx"]).min_snr == 30.0
    fast, slow = _trial("-O2 8-bit", 1.0, 15.5), _trial("-O3 8-bit + auto 16-bit x1.2", 1.2, 31.3)
    assert choose([fast, slow], 30.0, None)[0] is slow
    assert choose([fast, slow], 0.0, None)[0] is fast


def _trial(config: str, ms: float, snr: float):
    import attrs

    from tidlc.tune import Trial
    values = {a.name: None for a in attrs.fields(Trial)}
    values.update(config=config, ms=ms, snr_db=snr)
    return Trial(**values)
