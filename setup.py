"""Build for tidlc.

The core lives in ``tidlc/``; the plugin folders at the top level install as
sub-packages (``plugins/`` -> ``tidlc.plugins`` ...) so the source tree shows
the architecture while the import namespace stays one package.
"""
import os

import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
MAPPED = {"plugins": "tidlc.plugins", "frontends": "tidlc.frontends", "backends": "tidlc.backends"}


def _packages():
    packages = find_packages(include=["tidlc", "tidlc.*"])
    package_dir = {"tidlc": "tidlc"}
    for folder, name in MAPPED.items():
        package_dir[name] = folder
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return packages, package_dir


OPENMP_MODULES = set()  # extensions with prange loops: built with OpenMP when the compiler has it


def _extensions():
    """Every .pyx under the package folders becomes an extension module."""
    exts = []
    roots = {"tidlc": "tidlc", **MAPPED}
    for folder, name in roots.items():
        for dirpath, _, files in os.walk(os.path.join(HERE, folder)):
            for fname in sorted(files):
                if not fname.endswith(".pyx"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), HERE)
                sub = os.path.relpath(dirpath, os.path.join(HERE, folder))
                parts = [name] + ([] if sub == "." else sub.split(os.sep)) + [fname[:-4]]
                with open(os.path.join(dirpath, fname), encoding="utf-8") as f:
                    if "prange(" in f.read():
                        OPENMP_MODULES.add(".".join(parts))
                exts.append(Extension(
                    ".".join(parts), [rel], include_dirs=[numpy.get_include(), dirpath],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                    extra_compile_args=["-O3"]))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False})


class BuildExt(build_ext):
    """Adds OpenMP to the extensions that use prange if a test program builds with it (else their
    loops run serially: same results, one thread)."""

    def _openmp_flags(self) -> list[str]:
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as f:
                f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
                self.compiler.link_executable(objs, os.path.join(tmp, "omp_probe"), extra_postargs=[flag])
            except Exception:  # noqa: BLE001 - any failure means: no OpenMP
                print("tidlc: the compiler has no OpenMP; the integer kernels will run on one thread")
                return []
        return [flag]

    def build_extensions(self):
        flags = self._openmp_flags() if OPENMP_MODULES else []
        for ext in self.extensions:
            if ext.name in OPENMP_MODULES and flags:
                ext.extra_compile_args = list(ext.extra_compile_args) + flags
                ext.extra_link_args = list(ext.extra_link_args) + flags
        super().build_extensions()


packages, package_dir = _packages()

setup(
    name="tidlc",
    version="0.1.0",
    description="Open, pluggable model compiler for TI TDA4 (C7x + MMA)",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"": ["*.lark", "*.toml", "*.pxd", "*.pyx", "*.h"], "tidlc.report_assets": ["*.js", "*.css"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
    install_requires=[
        "numpy>=1.26", "attrs>=23.1", "pluggy>=1.3", "lark>=1.1.9", "onnx>=1.16",
        "protobuf>=4.21", "rich>=13", 'tomli>=2; python_version < "3.11"',
        # image pre-processing (calibration images, tidlc run IMAGE, io.bin pre-processing, --post drawing)
        "opencv-python-headless>=4.8,<5",
        # numpy's BLAS on one thread in tidlc's runs (same float sums on any machine; idle OpenBLAS
        # threads spinning took the integer kernels' cores: tidlc.parallel.one_blas_thread)
        "threadpoolctl>=3.1",
    ],
    extras_require={
        "test": ["pytest>=7.4", "onnxruntime>=1.18", "setuptools>=69", "wheel", "cython>=3.0",
                 "matplotlib>=3.7", "scipy>=1.10", "hypothesis>=6.80", "jsonschema>=4.18",
                 "scikit-learn>=1.3",  # tidlc eval tests: its handwritten digits are real labeled data
                 "selenium>=4.20",  # tidlc report page tests (headless Chromium)
                 "pycocotools>=2.0.7",  # tidlc eval --task detect (the [eval] extra)
                 "ray>=2.9",  # --ray (the [ray] extra; tests/test_parallel.py)
                 "flatbuffers>=23.5",  # TFLite host-op payloads (the [host] extra has it too)
                 # TF/TFLite frontend tests only: tidlc itself reads .pb/.tflite without them
                 "tensorflow-cpu>=2.15", "tflite>=2.10"],
        "plot": ["matplotlib>=3.5"],  # tidlc perf --plot
        "eval": ["pycocotools>=2.0.7"],  # tidlc eval --task detect: COCO mAP
        "ray": ["ray>=2.9"],  # --ray [ADDRESS]: calibration, eval and sweep on a Ray cluster (docs/scale.md)
        # host ops (docs/host-ops.md): ONNX ops on onnxruntime, TFLite ops on the LiteRT interpreter
        "host": ["onnxruntime>=1.18", "ai-edge-litert>=1.0", "flatbuffers>=23.5"],
        "bench": ["onnxruntime>=1.18", "onnxsim>=0.4.36", "openvino>=2024.0", "matplotlib>=3.7", "scikit-image>=0.22",
                  "tensorflow-cpu>=2.15", "tf2onnx>=1.16"],
    },
    entry_points={"console_scripts": ["tidlc = tidlc.cli:main"]},
    zip_safe=False,
)
