"""Serve the repository locally with the real `tritonserver` of the nvidia-pytriton wheel.

The ONNX models load on Triton's native onnxruntime backend (built once by
`model-selector build-backend`) with their production configs; the only rewrite, in a
runtime copy of the repository, is the instance kind: KIND_GPU becomes KIND_CPU because the
local backend build has no GPU support (`model_selector.serve.runtime`). The repository
itself is left untouched.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from model_selector.core.layout import BrokenRepository, check_built
from model_selector.serve.backend import BackendError, OnnxruntimeBackend, find_backend
from model_selector.serve.runtime import SITE_PACKAGES_ENV, materialise

log = logging.getLogger(__name__)


def free_ports(n: int) -> list[int]:
    """n TCP ports free on localhost right now."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ServeError(RuntimeError):
    """The server could not be started or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    libs: Path
    python_backend: Path
    stub: Path
    onnxruntime: OnnxruntimeBackend


def find_triton() -> TritonInstall:
    try:
        import pytriton
    except ImportError:
        raise ServeError("tritonserver not found: install the local extra (pip install 'model-selector[local]', "
                         "which brings the nvidia-pytriton wheel) or serve with the Docker image in docker/") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        onnxruntime = find_backend()
    except BackendError as err:
        raise ServeError(str(err)) from None
    install = TritonInstall(
        server=root / "bin" / "tritonserver",
        libs=Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        onnxruntime=onnxruntime,
    )
    for path in (install.server, install.python_backend / "libtriton_python.so", install.stub):
        if not path.exists():
            raise ServeError(f"{path} is missing: nvidia-pytriton ships no Triton python backend for Python {version}")
    return install


def _backend_dir(install: TritonInstall, runtime: Path) -> Path:
    backends = runtime / "backends"
    python = backends / "python"
    python.mkdir(parents=True)
    for item in install.python_backend.iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / "triton_python_backend_stub").symlink_to(install.stub)
    (backends / "onnxruntime").symlink_to(install.onnxruntime.directory)
    return backends


def _libpython_dirs() -> list[str]:
    """Where the stub finds libpython3.X.so.1.0: this interpreter's own build if shared, else the system's."""
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / name).exists():
        return [libdir]
    if ctypes.util.find_library(f"python{sys.version_info.major}.{sys.version_info.minor}"):
        return []
    raise ServeError(f"{name} not found: the Triton python backend stub needs a shared libpython. Install it "
                     f"(Debian/Ubuntu: apt-get install libpython{sys.version_info.major}.{sys.version_info.minor}) "
                     "or use a Python built with --enable-shared")


def _environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    lib_dirs = [str(install.libs), *_libpython_dirs()]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env[SITE_PACKAGES_ENV] = os.pathsep.join(site.getsitepackages())
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class LocalTritonServer:
    """A tritonserver process over a runtime copy of the repository; a context manager."""

    def __init__(self, repository: Path, host: str = "127.0.0.1", grpc_port: int = 8001, http_port: int = 8000,
                 metrics_port: int = 8002, log_file: Path | None = None, watchdog: bool = True,
                 log_verbose: int = 0, extra_args: tuple[str, ...] = ()):
        self.repository = Path(repository)
        self.host = host
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.runtime: Path | None = None  # a fresh temporary copy of the repository per start()
        self.requested_log_file = log_file
        self.log_file: Path | None = log_file
        self.process: subprocess.Popen | None = None
        self.use_watchdog = watchdog
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)  # more tritonserver flags, e.g. --grpc-restricted-protocol
        self.watchdog = None

    @classmethod
    def on_free_ports(cls, repository: Path, **kwargs) -> LocalTritonServer:
        """A server on three ports free right now (tests, benchmarks)."""
        grpc_port, http_port, metrics_port = free_ports(3)
        return cls(repository, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, **kwargs)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self, timeout: float = 300.0) -> None:
        try:
            check_built(self.repository)
        except BrokenRepository as err:
            raise ServeError(str(err)) from None
        install = find_triton()
        self.runtime = Path(tempfile.mkdtemp(prefix="model-selector-runtime-"))
        self.log_file = self.requested_log_file or self.runtime / "tritonserver.log"
        models = materialise(self.repository, self.runtime, gpu=install.onnxruntime.info["gpu"])
        log.info("onnxruntime backend: Triton %s built against onnxruntime %s from %s sources (%s)",
                 install.onnxruntime.info["triton_release"], install.onnxruntime.info["onnxruntime"],
                 install.onnxruntime.info["origin"]["kind"], install.onnxruntime.directory)
        command = [
            str(install.server),
            f"--model-repository={models}",
            f"--backend-directory={_backend_dir(install, self.runtime)}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--model-control-mode=explicit", "--load-model=*",
            "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            "--exit-on-error=true", f"--log-verbose={self.log_verbose}", *self.extra_args,
        ]
        log.info("starting tritonserver (log: %s)", self.log_file)
        with open(self.log_file, "ab") as log_fh:
            self.process = subprocess.Popen(command, env=_environment(install), stdout=log_fh,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        if self.use_watchdog:
            from model_selector.serve.lifecycle import StubWatchdog

            self.watchdog = StubWatchdog(self.grpc_url, server_pid=self.process.pid).start()

    def _log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        interesting = [line for line in text if line.startswith(("E", "error", "W")) and "CudaDriver" not in line
                       and "NVML" not in line and "DCGM" not in line]
        return "\n".join((interesting or text)[-lines:])

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code, tail = self.process.returncode, self._log_tail()
                    self.stop()
                    raise ServeError(f"tritonserver exited with code {code} before it was ready:\n{tail}\n"
                                     f"(full log: {self.log_file})")
                try:
                    if client.is_server_ready():
                        log.info("tritonserver ready: gRPC %s, HTTP %s:%d, metrics %s:%d", self.grpc_url,
                                 self.host, self.http_port, self.host, self.metrics_port)
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.5)
        finally:
            client.close()
        tail = self._log_tail()
        self.stop(keep_log=True)
        raise ServeError(f"tritonserver not ready after {timeout:.0f} s:\n{tail}\n(full log: {self.log_file})")

    def stop(self, timeout: float = 30.0, keep_log: bool = False) -> None:
        """Stop the server and delete its runtime copy. The log stays (and its path is logged) when
        `keep_log` is set or the server had already exited on its own: that log says why."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        keep_log = keep_log or (self.process is not None and self.process.poll() is not None)
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self.runtime is None:
            return
        if not keep_log:
            shutil.rmtree(self.runtime, ignore_errors=True)
            return
        shutil.rmtree(self.runtime / "models", ignore_errors=True)
        shutil.rmtree(self.runtime / "backends", ignore_errors=True)
        if self.log_file.exists():
            log.warning("tritonserver log kept: %s", self.log_file)

    def __enter__(self) -> LocalTritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
