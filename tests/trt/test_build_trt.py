"""``vrwkv-edge build-trt`` up to the point where TensorRT is missing: the plan (profiles from the graphs' actual
inputs), the trtexec lines it prints (checked against the ONNX files' input names and dims), precision rules, and
the clear refusals (int8 / int4 exports, custom-op exports without the plugin, bad arguments)."""
from __future__ import annotations

import importlib.util
import shlex

import onnx
import pytest

from vrwkv_edge.cli import main as cli_main
from vrwkv_edge.trt import build as trt_build

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                reason="TensorRT is installed: build-trt builds instead of printing trtexec lines")


def onnx_inputs(path):
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in m.graph.input if i.name not in inits}


def parse_shapes(arg: str) -> dict:
    out = {}
    for item in arg.split(","):
        name, dims = item.rsplit(":", 1)
        out[name.strip("'")] = [int(x) for x in dims.split("x")]
    return out


def check_line(line: str, max_prefill: int, max_batch: int) -> str:
    """Checks one printed trtexec line against its ONNX file; returns the graph's file stem."""
    args = shlex.split(line)
    assert args[0] == "trtexec"
    opts = dict(a[2:].split("=", 1) for a in args[1:] if "=" in a)
    inputs = onnx_inputs(opts["onnx"])
    stem = opts["onnx"].rsplit("/", 1)[1].removesuffix(".onnx")
    assert opts["saveEngine"].endswith(".engine")
    if "minShapes" not in opts:       # every dimension fixed
        assert all(isinstance(d, int) and d > 0 for dims in inputs.values() for d in dims)
        return stem
    lo, opt, hi = (parse_shapes(opts[k]) for k in ("minShapes", "optShapes", "maxShapes"))
    assert set(lo) == set(opt) == set(hi) == set(inputs), (stem, set(lo) ^ set(inputs))
    for name, dims in inputs.items():
        assert len(lo[name]) == len(dims) == len(hi[name]), name
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                assert lo[name][axis] == opt[name][axis] == hi[name][axis] == d, (name, axis)
            elif axis == 0:
                assert (lo[name][0], hi[name][0]) == (1, max_batch), name
            else:
                assert stem.startswith("prefill") and axis == 1, (stem, name, d)
                assert (lo[name][1], opt[name][1], hi[name][1]) == (1, min(128, max_prefill), max_prefill)
    return stem


@pytest.mark.slow
def test_prints_trtexec_lines_that_match_the_graphs(visual_fp32, capsys):
    """Every graph of a VisualRWKV export (the slow fixture: four graphs to export)."""
    rc = cli_main(["build-trt", str(visual_fp32), "--max-prefill", "96", "--max-batch", "4"])
    out, err = capsys.readouterr()
    assert rc == 1 and "TensorRT Python package" in err and "no engine was built" in err
    lines = out.strip().splitlines()
    assert sorted(check_line(line, 96, 4) for line in lines) == ["decode", "image_prefill", "prefill", "vision"]
    assert all("--stronglyTyped" in line for line in lines)
    # The decode graph's state inputs are all there: one per layer and field.
    decode = next(line for line in lines if "decode.onnx" in line)
    assert decode.count("past_key_values.") == 2 * 3 * 3    # 2 layers x 3 fields, in each of min / opt / max


def test_language_model_lines_and_precisions(lm_fp16, classifier_fp32, capsys):
    rc = cli_main(["build-trt", str(lm_fp16), "--max-prefill", "96", "--max-batch", "4"])
    out, err = capsys.readouterr()
    assert rc == 1 and "TensorRT Python package" in err and "no engine was built" in err
    lines = out.strip().splitlines()
    assert sorted(check_line(line, 96, 4) for line in lines) == ["decode", "prefill"]
    assert all("--stronglyTyped" in line and ".fp16.engine" in line for line in lines)
    # The decode graph's state inputs are all there: 2 layers x 3 fields, in each of min / opt / max.
    decode = next(line for line in lines if "decode.onnx" in line)
    assert decode.count("past_key_values.") == 2 * 3 * 3
    # An fp32 export asked for fp16 / bf16: weakly typed with the builder flag.
    assert cli_main(["build-trt", str(classifier_fp32), "--print-commands", "--precision", "bf16",
                     "--timing-cache", "/tmp/cache.bin"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "--bf16" in line and "--stronglyTyped" not in line and "--timingCacheFile=/tmp/cache.bin" in line
    # An fp16 export cannot give fp32 engines.
    assert cli_main(["build-trt", str(lm_fp16), "--precision", "fp32"]) == 2
    assert "is an fp16 export" in capsys.readouterr().err


def test_classifier_file(classifier_fp32, capsys):
    assert cli_main(["build-trt", str(classifier_fp32), "--print-commands", "--max-batch", "8"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert check_line(line, 1, 8) == "classifier"


def test_refusals_name_what_is_wrong(lm_fp16, tmp_path, capsys, monkeypatch):
    for argv, message in [([str(tmp_path / "missing")], "no such directory"),
                          ([str(lm_fp16), "--max-prefill", "0"], "--max-prefill 0"),
                          ([str(lm_fp16), "--graphs", "decode_embeds"], "no graph 'decode_embeds'"),
                          ([str(lm_fp16), "--plugin", str(tmp_path / "nope.so")], "--plugin"),
                          ([str(tmp_path)], "metadata.json is missing")]:
        assert cli_main(["build-trt", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    from vrwkv_edge.trt import build as trt_build
    real = trt_build.read_metadata

    def patched(key, value):
        def read(d):
            meta = real(d)
            meta[key] = value
            return meta
        monkeypatch.setattr(trt_build, "read_metadata", read)      # the name build-trt reads it by

    patched("quantize", "int8")
    assert cli_main(["build-trt", str(lm_fp16)]) == 2
    assert "int8 export" in capsys.readouterr().err
    patched("wkv", {"flavour": "custom", "domain": "vrwkv", "op_version": 1})
    assert cli_main(["build-trt", str(lm_fp16)]) == 2
    err = capsys.readouterr().err
    assert "custom-op export" in err and "--plugin" in err and "cmake -S csrc/plugins/trt_wkv" in err
    plugin = tmp_path / "libvrwkv_trt_wkv.so"
    plugin.write_bytes(b"\x7fELF")
    assert cli_main(["build-trt", str(lm_fp16), "--print-commands", "--graphs", "decode",
                     "--plugin", str(plugin)]) == 0
    assert f"--dynamicPlugins={plugin}" in capsys.readouterr().out
