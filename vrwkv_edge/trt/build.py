"""``vrwkv-edge build-trt``: TensorRT engines for an export, or the ``trtexec`` lines that build them.

An export directory (``vrwkv-edge export``) holds one ONNX file per graph kind (``decode``, ``prefill``, the
``_embeds`` variants, ``vision`` and ``image_prefill`` for a VisualRWKV); a Vision-RWKV classifier is one ONNX file
(``export-vision-rwkv``).  Each graph becomes one engine with one optimisation profile, whose shapes come from the
graph's actual inputs: the first dimension of every input is the batch (1 .. ``--max-batch``), a prefill graph's
second symbolic dimension of its token input is the sequence (1 .. ``--max-prefill``); every other dimension is fixed
in the file.  Decode graphs take one token (the decode profile), prefill graphs a range (the prefill profile).

Precision: the network is strongly typed, so an engine computes in the types the export was written with (fp16
weights and matmuls for ``--dtype fp16`` exports; the recurrent state, the decay and the WKV stay fp32 in every
export).  ``--precision`` defaults to the export's dtype; asking an fp32 export for fp16 / bf16 builds a weakly
typed network with that builder flag instead (TensorRT then picks per layer; the graph's inputs and outputs, the
state included, stay fp32).  int8 / int4 exports are refused: their ``DynamicQuantizeLinear`` / ``MatMulInteger`` /
``MatMulNBits`` nodes exist in no TensorRT.

Custom-op exports (``--wkv custom``) need the plugin library (``csrc/plugins/trt_wkv``): ``--plugin LIB``.

With the TensorRT Python package (``import tensorrt``, >= 10.0) the engines are built here and recorded with their
build settings in ``DIR/tensorrt/tensorrt.json`` (every file written atomically, the manifest last).  Without it
the command says so and prints one ``trtexec`` line per graph (JetPack ships ``trtexec`` in
``/usr/src/tensorrt/bin``); it exits 1 because nothing was built.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from vrwkv_edge.cli_support import EXIT_FAILED, EXIT_OK, run_command
from vrwkv_edge.fileio import atomic_write, write_json
from vrwkv_edge.runtime.artefact import ArtefactError, artefact_wkv, read_metadata

PRECISIONS = ("fp16", "bf16", "fp32")
DEFAULT_MAX_PREFILL = 512
DEFAULT_MAX_BATCH = 1
# The prefill profile's optimum: a typical prompt or image_prefill chunk, capped by --max-prefill.
OPT_PREFILL = 128
ENGINE_DIR = "tensorrt"
MANIFEST = "tensorrt.json"
MANIFEST_FORMAT = "vrwkv_edge.tensorrt"
# The first TensorRT with IPluginV3, STRONGLY_TYPED networks and the ONNX parser's plugin lookup by node domain
# (JetPack 6.1+).  JetPack 6.0's TensorRT 8.6 takes the standard-op export at opset 17 (README).
MIN_TENSORRT = (10, 0)
ONNX_ELEM_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}
PLUGIN_CMAKE = ("cmake -S csrc/plugins/trt_wkv -B build-trt -DTENSORRT_INCLUDE_DIR=<TensorRT include dir> "
                "&& cmake --build build-trt")


class BuildError(ValueError):
    """Bad input to build-trt (the artefact, an argument); the message names it."""


@dataclass
class InputProfile:
    name: str
    dtype: str
    min: list
    opt: list
    max: list
    dynamic: bool                                     # the file leaves a dimension open (the engine fixes it)


@dataclass
class GraphPlan:
    kind: str
    onnx: Path
    engine: Path
    inputs: list = field(default_factory=list)        # InputProfile per graph input, in the file's order


@dataclass
class BuildPlan:
    source: Path                                      # the export directory or the classifier .onnx
    dtype: str                                        # the export's dtype
    precision: str
    strongly_typed: bool
    wkv_flavour: str
    plugin: Optional[Path]
    timing_cache: Optional[Path]
    manifest: Path
    graphs: list = field(default_factory=list)


# ---- reading the artefact ----------------------------------------------------------------------------------

def graph_inputs(path: Path) -> list[tuple[str, str, list]]:
    """(name, element type, dims) of every graph input of an ONNX file, dims as ints or symbolic names; the
    weights (external data) are not read."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:   # onnx raises DecodeError and friends: report the file
        raise BuildError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    inits = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else "?")
                for d in t.shape.dim]
        out.append((inp.name, ONNX_ELEM_NAMES.get(t.elem_type, f"onnx-type-{t.elem_type}"), dims))
    return out


def input_profile(kind: str, name: str, dtype: str, dims: list, max_batch: int, max_prefill: int,
                  where: Path) -> InputProfile:
    """min / opt / max shapes of one input: axis 0 symbolic = the batch, axis 1 symbolic in a prefill graph's
    token input = the sequence; any other symbolic dimension is refused (the profile could not be chosen)."""
    lo, opt, hi = [], [], []
    dynamic = False
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            lo.append(d), opt.append(d), hi.append(d)
            continue
        dynamic = True
        if axis == 0:
            lo.append(1), opt.append(1), hi.append(max_batch)
        elif axis == 1 and kind.startswith("prefill"):
            lo.append(1), opt.append(min(OPT_PREFILL, max_prefill)), hi.append(max_prefill)
        else:
            raise BuildError(f"{where}: input {name!r} dimension {axis} is {d!r}: only the batch (dimension 0) "
                             "and a prefill graph's sequence (dimension 1) may be dynamic")
    return InputProfile(name, dtype, lo, opt, hi, dynamic)


def _classifier_meta(path: Path) -> dict:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise BuildError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    for prop in model.metadata_props:
        try:
            meta = json.loads(prop.value)
        except ValueError:
            continue
        if isinstance(meta, dict) and meta.get("format") == "vrwkv_edge.vision_rwkv.onnx":
            return meta
    raise BuildError(f"{path}: not a Vision-RWKV classifier export (no vrwkv_edge.vision_rwkv.onnx metadata); "
                     "build-trt takes an export directory or an export-vision-rwkv .onnx file")


def plan(source, precision: Optional[str] = None, max_prefill: int = DEFAULT_MAX_PREFILL,
         max_batch: int = DEFAULT_MAX_BATCH, timing_cache=None, plugin=None, kinds: Optional[Sequence[str]] = None
         ) -> BuildPlan:
    """What build-trt will build for ``source`` (an export directory or a classifier ``.onnx``), checked."""
    src = Path(source)
    if precision is not None and precision not in PRECISIONS:
        raise BuildError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not 1 <= max_prefill <= 1 << 20:
        raise BuildError(f"--max-prefill {max_prefill}: must be in [1, {1 << 20}]")
    if not 1 <= max_batch <= 4096:
        raise BuildError(f"--max-batch {max_batch}: must be in [1, 4096]")
    if src.is_file() and src.suffix == ".onnx":
        meta = _classifier_meta(src)
        dtype, flavour = "fp32", (meta.get("wkv") or {}).get("flavour", "standard")
        graphs = [("classifier", src, src.with_suffix(""))]
        manifest = src.with_name(src.stem + "." + MANIFEST)
    else:
        try:
            meta = read_metadata(src)
        except ArtefactError as e:
            raise BuildError(str(e)) from None
        if meta.get("quantize"):
            raise BuildError(f"{src}: a {meta['quantize']} export: its DynamicQuantizeLinear / MatMulInteger / "
                             "MatMulNBits nodes exist in no TensorRT; export with --dtype fp16 (or fp32) and no "
                             "--quantize for TensorRT")
        dtype, flavour = meta["dtype"], artefact_wkv(meta)["flavour"]
        wanted = list(kinds) if kinds else list(meta["graphs"])
        for k in wanted:
            if k not in meta["graphs"]:
                raise BuildError(f"{src}: no graph {k!r} in this export (it has {', '.join(meta['graphs'])})")
        graphs = [(k, src / meta["graphs"][k]["file"], src / ENGINE_DIR / k) for k in wanted]
        manifest = src / ENGINE_DIR / MANIFEST
    precision = precision or dtype
    if dtype == "fp16" and precision != "fp16":
        raise BuildError(f"--precision {precision}: {src} is an fp16 export; export with --dtype fp32 for fp32 or "
                         "bf16 engines")
    plugin_path = Path(plugin) if plugin else None
    if flavour == "custom" and plugin_path is None:
        raise BuildError(f"{src} is a custom-op export (--wkv custom): pass --plugin <libvrwkv_trt_wkv.so>, built "
                         f"by: {PLUGIN_CMAKE}")
    if plugin_path is not None and not plugin_path.is_file():
        raise BuildError(f"--plugin {plugin_path}: no such file")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise BuildError(f"--timing-cache {timing_cache}: is a directory, expected a file")
    bp = BuildPlan(src, dtype, precision, precision == dtype, flavour, plugin_path,
                   Path(timing_cache) if timing_cache else None, manifest)
    for kind, onnx_path, stem in graphs:
        inputs = [input_profile(kind, n, t, d, max_batch, max_prefill, onnx_path)
                  for n, t, d in graph_inputs(onnx_path)]
        bp.graphs.append(GraphPlan(kind, onnx_path, stem.with_name(f"{stem.name}.{precision}.engine"), inputs))
    return bp


# ---- trtexec -----------------------------------------------------------------------------------------------

def _shape_arg(inputs: list, which: str) -> str:
    def name(n: str) -> str:   # trtexec quotes names holding its separators
        return f"'{n}'" if any(c in n for c in ",:'x") else n
    return ",".join(f"{name(p.name)}:{'x'.join(map(str, getattr(p, which)))}" for p in inputs)


def trtexec_command(bp: BuildPlan, g: GraphPlan, trtexec: str = "trtexec") -> str:
    """The trtexec line that builds graph ``g`` as :func:`build_engines` would."""
    args = [trtexec, f"--onnx={g.onnx}", f"--saveEngine={g.engine}"]
    args.append("--stronglyTyped" if bp.strongly_typed else f"--{bp.precision}")
    if any(p.dynamic for p in g.inputs):      # explicit even where min = max: trtexec would guess 1 with a warning
        args += [f"--minShapes={_shape_arg(g.inputs, 'min')}", f"--optShapes={_shape_arg(g.inputs, 'opt')}",
                 f"--maxShapes={_shape_arg(g.inputs, 'max')}"]
    if bp.timing_cache:
        args.append(f"--timingCacheFile={bp.timing_cache}")
    if bp.plugin:
        args.append(f"--dynamicPlugins={bp.plugin}")
    return " ".join(shlex.quote(a) for a in args)


# ---- building with the TensorRT Python API -----------------------------------------------------------------

def import_tensorrt():
    """``tensorrt`` (>= 10.0) or None when it is not installed; an older one is refused by name."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    version = tuple(int(x) for x in trt.__version__.split(".")[:2])
    if version < MIN_TENSORRT:
        raise BuildError(f"TensorRT {trt.__version__} is installed; build-trt needs >= "
                         f"{'.'.join(map(str, MIN_TENSORRT))} (JetPack 6.0 / TensorRT 8.6: use trtexec on the "
                         "standard-op export at opset 17)")
    return trt


def build_engine(trt, bp: BuildPlan, g: GraphPlan, compute_capability=None, log=print) -> dict:
    """Builds graph ``g`` with the TensorRT module ``trt`` (``tensorrt``, or ``tensorrt_rtx_bindings``, whose builder
    runs without a GPU when given a ``compute_capability``) and writes its engine atomically.  Returns its record."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if bp.plugin:
        builder.get_plugin_registry().load_library(str(bp.plugin))
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if bp.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(g.onnx)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BuildError(f"{g.onnx}: TensorRT's ONNX parser refused it: {errors}")
    config = builder.create_builder_config()
    if not bp.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16 if bp.precision == "fp16" else trt.BuilderFlag.BF16)
    if compute_capability is not None:
        config.num_compute_capabilities = 1     # else the builder targets an unclear default as well
        config.set_compute_capability(compute_capability, 0)
    profile = builder.create_optimization_profile()
    for p in g.inputs:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache = None
    if bp.timing_cache:
        data = bp.timing_cache.read_bytes() if bp.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
    t0 = time.time()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise BuildError(f"{g.onnx}: TensorRT could not build an engine (see its log above)")
    seconds = time.time() - t0
    with atomic_write(g.engine) as tmp:
        Path(tmp).write_bytes(bytes(engine))
    if cache is not None:
        with atomic_write(bp.timing_cache) as tmp:
            Path(tmp).write_bytes(bytes(cache.serialize()))
    log(f"{g.kind}: {g.engine} ({g.engine.stat().st_size:,} bytes, {seconds:.1f} s)")
    return {"file": g.engine.name, "onnx": g.onnx.name, "bytes": g.engine.stat().st_size,
            "sha256": hashlib.sha256(g.engine.read_bytes()).hexdigest(), "build_seconds": round(seconds, 2),
            "profile": [asdict(p) for p in g.inputs]}


def build_engines(bp: BuildPlan, trt, compute_capability=None, log=print) -> Path:
    """Builds every graph of the plan and writes the manifest (last, atomically): the engines and their settings."""
    engines = {g.kind: build_engine(trt, bp, g, compute_capability, log) for g in bp.graphs}
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": 1,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt_version": getattr(trt, "__version__", "unknown"), "tensorrt_module": trt.__name__,
        "compute_capability": None if compute_capability is None else str(compute_capability),
        "source": bp.source.name, "export_dtype": bp.dtype, "precision": bp.precision,
        "strongly_typed": bp.strongly_typed, "state_dtype": "float32", "wkv_flavour": bp.wkv_flavour,
        "plugin": None if bp.plugin is None else {"file": str(bp.plugin),
                                                 "sha256": hashlib.sha256(bp.plugin.read_bytes()).hexdigest()},
        "timing_cache": None if bp.timing_cache is None else str(bp.timing_cache),
        "engines": engines,
    }
    write_json(bp.manifest, manifest)
    return bp.manifest


# ---- the command -------------------------------------------------------------------------------------------

HELP = "build TensorRT engines for an export (or print the trtexec lines where TensorRT is not installed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="DIR", help="an export directory, or a Vision-RWKV classifier .onnx")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision (default: the export's dtype; the state is always fp32)")
    p.add_argument("--max-prefill", type=int, default=DEFAULT_MAX_PREFILL,
                   help=f"longest prefill the prefill profile accepts (default {DEFAULT_MAX_PREFILL})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch of every profile (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--timing-cache", metavar="FILE", default=None,
                   help="TensorRT timing cache, read if present and updated (speeds up rebuilds)")
    p.add_argument("--plugin", metavar="LIB", default=None,
                   help="the vrwkv plugin library (libvrwkv_trt_wkv.so), needed for --wkv custom exports")
    p.add_argument("--graphs", nargs="+", default=None, metavar="KIND", help="only these graph kinds")
    p.add_argument("--print-commands", action="store_true",
                   help="print the trtexec lines and build nothing, even where TensorRT is installed")


def run(args) -> int:
    bp = plan(args.source, args.precision, args.max_prefill, args.max_batch, args.timing_cache, args.plugin,
              args.graphs)
    trt = None if args.print_commands else import_tensorrt()
    if trt is None:
        if not args.print_commands:
            print("build-trt: the TensorRT Python package (tensorrt >= 10.0) is not installed here, so no engine "
                  "was built.  On the target (JetPack 6.1+ / TensorRT 10.x), run these lines "
                  "(trtexec is in /usr/src/tensorrt/bin on a Jetson):", file=sys.stderr)
        for g in bp.graphs:
            print(trtexec_command(bp, g))
        return EXIT_OK if args.print_commands else EXIT_FAILED
    manifest = build_engines(bp, trt)
    print(f"engines and build settings: {manifest}")
    return EXIT_OK


def add_build_trt_cli(subparsers) -> None:
    """Registers ``vrwkv-edge build-trt`` on the package CLI's sub-parsers."""
    p = subparsers.add_parser("build-trt", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vrwkv_edge.trt.build", description=HELP)
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
