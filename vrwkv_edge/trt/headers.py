"""TensorRT 10.x C++ headers for compiling the plugin (``csrc/plugins/trt_wkv``) where TensorRT is not installed.

NVIDIA's pip wheels ship no C++ headers; the one registry source found is the ``kernel-lens`` wheel (MIT), which
vendors NVIDIA's Apache-2.0 TensorRT 10.14.1.48 headers under ``kernel_lens/include/tensorrt``.  This module
downloads that wheel with pip (``--no-deps``: only the headers are wanted), checks its pinned hash, and extracts the
headers into the native cache folder.  On a machine with TensorRT, point ``$VRWKV_TRT_INCLUDE_DIR`` at its own
headers instead (a Jetson: ``/usr/include/aarch64-linux-gnu``): build against the target's own version.

    python -m vrwkv_edge.trt.headers          # prints the folder holding NvInferRuntime.h
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vrwkv_edge.native.build import cache_root

WHEEL_REQUIREMENT = "kernel-lens==2.0.1"
WHEEL_SHA256 = "07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
HEADERS_IN_WHEEL = "kernel_lens/include/tensorrt/"
HEADERS_VERSION = "10.14.1.48"
INCLUDE_DIR_ENV = "VRWKV_TRT_INCLUDE_DIR"


class HeadersUnavailable(RuntimeError):
    """The headers could not be found or fetched; the message says why and what to do."""


def tensorrt_version(include_dir: Path) -> tuple[int, int, int]:
    """(major, minor, patch) declared by ``NvInferVersion.h`` in ``include_dir``."""
    text = (include_dir / "NvInferVersion.h").read_text(errors="replace")
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[2].isdigit():
            values[parts[1]] = int(parts[2])

    def pick(part: str) -> int:
        for name in (f"NV_TENSORRT_{part}", f"TRT_{part}_ENTERPRISE"):
            if name in values:
                return values[name]
        raise HeadersUnavailable(f"{include_dir / 'NvInferVersion.h'}: no TensorRT {part.lower()} version")
    return pick("MAJOR"), pick("MINOR"), pick("PATCH")


def _check_include_dir(include_dir: Path, origin: str) -> Path:
    if not (include_dir / "NvInferRuntime.h").is_file():
        raise HeadersUnavailable(f"{origin}: {include_dir} has no NvInferRuntime.h")
    if tensorrt_version(include_dir)[0] < 10:
        raise HeadersUnavailable(f"{origin}: {include_dir} holds TensorRT {'.'.join(map(str, tensorrt_version(include_dir)))}"
                                 "; the plugin needs TensorRT >= 10.0 (IPluginV3)")
    return include_dir


def include_dir(fetch: bool = True) -> Path:
    """The folder holding ``NvInferRuntime.h``: ``$VRWKV_TRT_INCLUDE_DIR`` when set, else the cached kernel-lens
    headers, fetched on first use when ``fetch``."""
    if os.environ.get(INCLUDE_DIR_ENV):
        return _check_include_dir(Path(os.environ[INCLUDE_DIR_ENV]), f"${INCLUDE_DIR_ENV}")
    target = cache_root() / f"trt-headers-{HEADERS_VERSION}"
    if (target / "NvInferRuntime.h").is_file():
        return target
    if not fetch:
        raise HeadersUnavailable(f"TensorRT headers not fetched yet: run python -m vrwkv_edge.trt.headers "
                                 f"or set ${INCLUDE_DIR_ENV}")
    return _fetch(target)


def _fetch(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="trt-headers-", dir=target.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "--dest", str(tmp / "wheel"), WHEEL_REQUIREMENT]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = sorted((tmp / "wheel").glob("*.whl")) if res.returncode == 0 else []
        if not wheels:
            raise HeadersUnavailable(f"could not download {WHEEL_REQUIREMENT} for the TensorRT headers "
                                     f"(pip: {res.stderr.strip()[-500:] or 'no wheel'}); set ${INCLUDE_DIR_ENV} "
                                     "to a TensorRT >= 10 include folder instead")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise HeadersUnavailable(f"{wheels[0].name}: sha256 {digest} is not the pinned {WHEEL_SHA256}")
        out = tmp / "include"
        out.mkdir()
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith(HEADERS_IN_WHEEL) and name.endswith(".h") and "/" not in name[len(HEADERS_IN_WHEEL):]:
                    (out / name[len(HEADERS_IN_WHEEL):]).write_bytes(z.read(name))
        _check_include_dir(out, WHEEL_REQUIREMENT)
        try:
            os.rename(out, target)            # atomic: a concurrent fetch either wins or finds it done
        except OSError:
            if not (target / "NvInferRuntime.h").is_file():
                raise
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    try:
        print(include_dir())
    except HeadersUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
