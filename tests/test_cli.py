import json
import subprocess
import sys

import pytest

from mobilenets.cli import main, zoo_rows


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert [line.split()[0] for line in out.strip().splitlines()][:2] == ["mobilenet_v1", "mobilenet_v2"]
    code, out, _ = run(capsys, "list", "mobilenet_v3*small*")
    assert code == 0
    assert {line.split()[0] for line in out.strip().splitlines()} == {"mobilenet_v3_small", "mobilenet_v3_small_minimal"}
    code, out, _ = run(capsys, "list", "*v4_conv*")
    assert [line.split()[0] for line in out.strip().splitlines()] == [
        "mobilenet_v4_conv_large", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_small"]
    code, out, _ = run(capsys, "list", "*v3_large*", "--task", "detection")
    assert code == 0 and [line.split()[0] for line in out.strip().splitlines()] == ["ssdlite_mobilenet_v3_large"]
    code, out, _ = run(capsys, "list", "--task", "segmentation")
    assert code == 0 and {line.split()[0].split("_")[0] for line in out.strip().splitlines()} == {"lraspp", "deeplabv3"}
    with pytest.raises(SystemExit):
        main(["list", "--task", "classify"])
    assert "invalid choice: 'classify'" in capsys.readouterr().err


def test_profile_json(capsys):
    code, out, _ = run(capsys, "profile", "mobilenet_v2", "--width-mult", "1.4", "--num-classes", "1001", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "mobilenet_v2" and data["width_mult"] == 1.4 and data["resolution"] == 224
    assert data["num_classes"] == 1001 and isinstance(data["params"], int) and isinstance(data["macs"], int)
    assert data["macs"] // 1_000_000 == 582
    assert "layers" not in data


def test_profile_per_layer(capsys):
    code, out, _ = run(capsys, "profile", "mobilenet_v1", "--resolution", "128", "--per-layer", "--json")
    data = json.loads(out)
    assert code == 0 and data["resolution"] == 128
    assert data["layers"][0]["name"] == "stem.conv" and data["layers"][0]["output_shape"] == [32, 64, 64]
    # hand count of the 3x3 stride-2 stem (3 -> 32 channels, 64x64 out); the V1 paper's Table 7 total
    assert data["layers"][0]["macs"] == 64 * 64 * 32 * 3 * 3 * 3
    assert data["macs"] // 10**6 == 186
    code, out, _ = run(capsys, "profile", "mobilenet_v1", "--per-layer")
    assert code == 0 and "stages.4.1.conv_pw.conv" in out and "4,231,976 params" in out


def test_profile_errors(capsys):
    code, _, err = run(capsys, "profile", "mobilenet_v4")
    assert code == 2 and "unknown model 'mobilenet_v4'" in err and "available:" in err
    with pytest.raises(SystemExit) as exc:
        main(["profile", "mobilenet_v2", "--width-mult", "-1"])
    assert exc.value.code == 2
    assert "must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["profile", "mobilenet_v2", "--widht-mult", "0.5"])
    assert exc.value.code == 2  # argparse's usage error, not a crash or a silent success
    assert "unrecognized arguments: --widht-mult 0.5" in capsys.readouterr().err


def test_zoo_beside_the_papers(capsys):
    rows = zoo_rows()
    names = {r["name"] for r in rows}
    assert names == {
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "mobilenet_v3_large_minimal",
        "mobilenet_v3_small_minimal",
        "mobilenet_v4_conv_small",
        "mobilenet_v4_conv_medium",
        "mobilenet_v4_conv_large",
        "mobilenet_v4_hybrid_medium",
        "mobilenet_v4_hybrid_large",
    }
    for r in rows:
        if r["name"].startswith("mobilenet_v4"):
            # the V4 paper rounds to 0.2G / 1.0G / 5.9G / 1.2G / 7.2G; we count 186M / 1080M / 6376M / 1271M /
            # 7712M for the reference architecture
            assert r["macs"] / 1e6 == pytest.approx(r["paper_macs_m"], rel=0.09), r
        if r["name"] in ("mobilenet_v1", "mobilenet_v2"):
            assert abs(r["macs"] / 1e6 - r["paper_macs_m"]) <= 1.0, r
        if r["name"] in ("mobilenet_v3_large", "mobilenet_v3_small"):
            assert r["macs"] / 1e6 == pytest.approx(r["paper_macs_m"], rel=0.03), r
    code, out, _ = run(capsys, "zoo")
    assert code == 0 and "mobilenet_v3_small_minimal" in out and "paper" in out


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "profile", "mobilenet_v3_small", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["params"] == 2_542_856


def test_shared_argument_types():
    import argparse

    from mobilenets.argtypes import non_negative_float, positive_float, positive_int, resolution

    assert positive_int("3") == 3 and non_negative_float("0") == 0.0 and positive_float("0.5") == 0.5
    assert resolution("28") == 28
    for parse, text, message in [
        (positive_int, "0", "must be >= 1, got 0"),
        (positive_int, "1.5", "expected an integer, got '1.5'"),
        (positive_float, "0", "must be > 0.0, got 0"),
        (non_negative_float, "-1", "must be >= 0.0, got -1"),
        (resolution, "16", "must be >= 28, got 16"),
        (resolution, "big", "expected an integer number of pixels"),
        (positive_float, "nan", "expected a finite number, got 'nan'"),
        (non_negative_float, "inf", "expected a finite number, got 'inf'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)
