"""vrwkv_edge: VisualRWKV and RWKV-6/7 for edge deployment.

Layout decision (made once): the repository's top-level ``training/`` and ``export/`` folders are installed
as ``vrwkv_edge.training`` and ``vrwkv_edge.export`` through ``package_dir``.  Generic top-level names such as
``export`` would collide with other distributions in site-packages, so nothing but ``vrwkv_edge`` is ever
installed at the top level.  Always import them as ``vrwkv_edge.export`` / ``vrwkv_edge.training``.

Install torch first with the exact pin (``pip install torch==2.13.0``): an unpinned ``torch`` requirement pulls a
multi-GB CUDA build.  ``install_requires`` therefore accepts any torch >= 2.4 and never forces a new download.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "vrwkv_edge" / "__init__.py").read_text()).group(1)

packages = find_packages(include=["vrwkv_edge", "vrwkv_edge.*"], exclude=["tests", "tests.*"])
package_dir = {"vrwkv_edge": "vrwkv_edge"}
for sub in ("export", "training"):
    package_dir[f"vrwkv_edge.{sub}"] = sub
    packages.append(f"vrwkv_edge.{sub}")
    packages += [f"vrwkv_edge.{sub}.{p}" for p in find_packages(where=sub)]
# The kernel sources travel in the wheel, so `vrwkv-edge build-native` works after a normal install too.
package_dir["vrwkv_edge.native.csrc"] = "csrc"
packages.append("vrwkv_edge.native.csrc")
NATIVE_SOURCES = ["CMakeLists.txt", "README.md", "include/vrwkv/*.h", "kernels/*.h", "kernels/*.cuh", "kernels/*.cpp",
                  "kernels/*/*.h", "kernels/*/*.cpp", "kernels/*/*.cu", "cuda_on_cpu/*.h", "torch/*.cpp", "tests/*.cpp",
                  # the ONNX Runtime custom-op library (vrwkv-edge build-native) and the TensorRT plugin (build-trt)
                  "ort_ops/CMakeLists.txt", "ort_ops/README.md", "ort_ops/include/*.h", "ort_ops/src/*.hpp",
                  "ort_ops/src/*.cpp", "ort_ops/src/*.cu", "plugins/trt_wkv/CMakeLists.txt", "plugins/trt_wkv/README.md",
                  "plugins/trt_wkv/*.h", "plugins/trt_wkv/*.cpp", "plugins/trt_wkv/*.cu", "plugins/trt_wkv/tests/*.cpp"]

PACKAGE_DATA = ["data/*.txt", "data/*.safetensors", "data/*.json", "data/LICENSE*"]

EXTRAS = {
    "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
    # onnxruntime-gpu and onnxruntime own the same files: install exactly one of them, never both.
    "gpu": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime-gpu>=1.18"],
    # matplotlib: the loss-curve PNG (skipped with a note without it)
    "train": ["deepspeed>=0.14", "ninja", "pyyaml>=6", "matplotlib>=3.7"],
    # TensorRT-RTX: its builder runs on the CPU, so the tests check that every graph kind parses and builds for SM89.
    # Deployment TensorRT is not an extra: a Jetson's comes with JetPack, a server's with its CUDA stack.
    "tensorrt-rtx": ["tensorrt-rtx-cu13-libs==1.7.1.116", "tensorrt-rtx-cu13-bindings==1.7.1.116"],
    # Vision towers are implemented in the package (timm-compatible names, no timm/torchvision needed);
    # transformers supplies the CLIP tower of VisualRWKV v6.
    "vision": ["transformers>=4.40"],
    "bench": ["matplotlib>=3.7", "psutil>=5.9"],
    # Triton Inference Server: its model-configuration schema (model_config_pb2) and client.  tritonclient pins
    # ml-dtypes<=0.5.4, which onnx accepts.  triton-chat --protocol http also needs tritonclient[http].
    "serving": ["tritonclient[grpc]>=2.40"],
    # setuptools: tests/test_layout.py builds the wheel without build isolation.
    # ninja: tests/native builds the C++ kernels; jsonschema: the reference validator the metadata schema is checked
    # against.
    "test": ["pytest>=7", "rwkv==0.8.32", "safetensors>=0.4", "setuptools>=70.1", "ninja", "jsonschema>=4.18"],
}

setup(
    name="vrwkv_edge",
    version=VERSION,
    description="VisualRWKV and RWKV-6/7 on the edge: exact models, constant-memory runtime, ONNX/TensorRT export",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    # Every data file the package reads at run time; tests/test_packaging.py builds the wheel and checks them.
    package_data={"vrwkv_edge": PACKAGE_DATA, "vrwkv_edge.native.csrc": NATIVE_SOURCES},
    include_package_data=True,
    install_requires=["torch>=2.4", "numpy>=1.24", "pillow>=10", "safetensors>=0.4", "tqdm>=4.60"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["vrwkv-edge=vrwkv_edge.cli:main"]},
)
