"""The benchmark: one row per model x implementation x backend x batch, with consistent figures."""

import json

import pytest
import torch

from mobilenets.cli import main
from mobilenets.deploy.bench import build_subjects, run_benchmark, time_interleaved
from mobilenets.profile import profile

pytest.importorskip("onnxruntime")


def test_rows_for_ours_and_peers():
    rows = run_benchmark(
        ["mobilenet_v3_small"], backends=["eager", "onnxruntime"], batches=[1, 2], threads=1, resolution=32,
        implementations=["mobilenets", "torchvision"], rounds=2, iters_per_round=2, show_progress=False,
        opset=17,  # the TorchScript-based exporter: 10x faster to export than the dynamo one at 18
    )
    keys = {(r.implementation, r.backend, r.batch) for r in rows}
    assert keys == {(i, b, n) for i in ("mobilenets", "torchvision") for b in ("eager", "onnxruntime") for n in (1, 2)}
    from mobilenets import create_model

    macs = profile(create_model("mobilenet_v3_small"), 32).macs
    for r in rows:
        assert r.threads == 1 and r.resolution == 32 and r.samples == 4
        assert 0 < r.latency_ms_median <= r.latency_ms_p90
        assert r.throughput_img_s == pytest.approx(r.batch / (r.latency_ms_median / 1e3))
        assert r.gflops == pytest.approx(2 * r.macs * r.batch / (r.latency_ms_median / 1e3) / 1e9)
        # torchvision's V3-Small is the same network: same MACs as ours, counted the same way
        assert r.macs == pytest.approx(macs, rel=0.01)


def test_openvino_rows_for_ours_and_peers():
    """Peers run on OpenVINO from torch.onnx.export's file, ours from our export; both INT8 rows from the
    same quantizer's QDQ files."""
    pytest.importorskip("openvino")
    rows = run_benchmark(
        ["mobilenet_v3_small"], backends=["openvino", "openvino-int8"], batches=[1], threads=1, resolution=32,
        implementations=["mobilenets", "torchvision"], rounds=1, iters_per_round=2, show_progress=False, opset=17,
    )
    assert {(r.implementation, r.backend) for r in rows} == {
        (i, b) for i in ("mobilenets", "torchvision") for b in ("openvino", "openvino-int8")}
    assert all(0 < r.latency_ms_median <= r.latency_ms_p90 for r in rows)


def test_peers_missing_architecture_skipped():
    subjects = build_subjects(["mobilenet_v1"], ["mobilenets", "torchvision"], resolution=32)
    assert [s.implementation for s in subjects] == ["mobilenets"]  # torchvision has no MobileNetV1


def test_untrained_layer_scales_set_to_one_checkpoints_kept(tmp_path):
    """Untrained V4 hybrids (ours and timm's) are timed with layer scales of 1, not their 1e-5 init, whose
    subnormal activations slow CPUs down; a checkpoint keeps its trained scales."""
    import mobilenets

    pytest.importorskip("timm")
    subjects = build_subjects(["mobilenet_v4_hybrid_medium"], ["mobilenets", "timm"], resolution=32)
    assert [s.implementation for s in subjects] == ["mobilenets", "timm"]
    for s in subjects:
        gammas = [p for n, p in s.module.named_parameters() if n.endswith("gamma")]
        assert len(gammas) == 30 and all(torch.equal(g, torch.ones_like(g)) for g in gammas)
    model = mobilenets.create_model("mobilenet_v4_hybrid_medium", width_mult=0.35, num_classes=4)
    path = mobilenets.save(model, tmp_path / "h.safetensors")
    (ours,) = build_subjects([str(path)], ["mobilenets"], resolution=32)
    assert all(torch.all(p == 1e-5) for n, p in ours.module.named_parameters() if n.endswith("gamma"))


def test_time_interleaved_counts_and_order():
    calls = []
    runners = {(k,): (lambda k: lambda x: calls.append(k))(k) for k in "abc"}
    samples = time_interleaved(runners, None, rounds=40, iters_per_round=2, warmup=1)
    assert {k: len(v) for k, v in samples.items()} == {("a",): 80, ("b",): 80, ("c",): 80}
    assert "".join(calls[:3]) == "abc"  # warm-up
    blocks = "".join(calls[3::2])
    assert "".join(calls[3:]) == "".join(c + c for c in blocks)  # each runner's calls of a round are together
    rounds = [blocks[i : i + 3] for i in range(0, len(blocks), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every round runs every runner once
    # the order changes between rounds, so every runner comes right after every other one
    predecessors = {(blocks[i - 1], blocks[i]) for i in range(1, len(blocks)) if blocks[i - 1] != blocks[i]}
    assert predecessors == {(p, q) for p in "abc" for q in "abc" if p != q}


def test_cli_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "lat.png"
    code = main([
        "benchmark", "mobilenet_v3_small", "--resolution", "32", "--backends", "eager", "--batch", "1",
        "--threads", "1", "--implementations", "mobilenets,timm", "--rounds", "1", "--iters", "2",
        "--json", "--plot", str(plot),
    ])
    out, err = capsys.readouterr()
    assert code == 0
    rows = json.loads(out)  # progress went to stderr, stdout is pure JSON
    assert {r["implementation"] for r in rows} == {"mobilenets", "timm"}
    for r in rows:
        assert {"model", "implementation", "backend", "batch", "threads", "latency_ms_median"} <= r.keys()
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backends", "tensorrt"], "unknown tensorrt; accepted: eager, compile, onnxruntime, onnxruntime-int8"),
        (["--batch", "0"], "values must be >= 1"),
    ],
)
def test_cli_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "mobilenet_v2", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_unknown_model(capsys):
    assert main(["benchmark", "mobilenet_v9", "--no-progress"]) == 2
    assert "unknown model 'mobilenet_v9'" in capsys.readouterr().err


def test_checkpoint_accuracy_in_rows_and_plot(tmp_path, capsys):
    import mobilenets

    paths = []
    for width, top1 in ((0.35, 0.81), (0.5, 0.86)):
        model = mobilenets.create_model("mobilenet_v3_small", width_mult=width, num_classes=10)
        path = tmp_path / f"v3s_{width}.safetensors"
        mobilenets.save(model, path, input_size=[3, 32, 32], training={"test_top1": top1})
        paths.append(str(path))
    plot = tmp_path / "acc.png"
    code = main(["benchmark", *paths, "--backends", "eager", "--implementations", "mobilenets", "--threads", "1",
                 "--rounds", "1", "--iters", "1", "--json", "--plot", str(plot)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and sorted(r["accuracy"] for r in rows) == [0.81, 0.86]
    assert {r["checkpoint"] for r in rows} == set(paths) and plot.is_file()
