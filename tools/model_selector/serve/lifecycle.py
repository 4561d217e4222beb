"""Keeping served models alive and current: the stub watchdog and live reload.

**Watchdog.** When a python model's stub process dies, this Triton release neither
restarts it nor marks the model unready: every later request fails with "Stub process
'<instance>' is not healthy". The watchdog notices (by the stub processes of a local
server, or else by a probe query through the ensemble) and reloads that model. A reload
starts a fresh stub, and Triton swaps the new instance in when it is ready.

**Reload.** `model-selector reload` loads a new `router.yaml`, or the repository's rebuilt
selector artifacts, into a running server as a new model version through Triton's model
control API (`load_model` with the files attached). That works the same on a local server
and in a container. Triton keeps serving the old version until the new one is ready, and
keeps it if the new one fails to load.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from model_selector.core import layout
from model_selector.core.config import ConfigError, load_config
from model_selector.core.contract import ENSEMBLE
from model_selector.serve.runtime import SYS_PATH_HEADER

log = logging.getLogger(__name__)

DEAD_STUB = re.compile(r"Stub process '(?P<instance>[^']+)' is not healthy")
INSTANCE_NAME = re.compile(r"\w+_\d+_\d+")
PROBE_QUERY = "model-selector watchdog probe"


class ReloadError(RuntimeError):
    """A reload was refused or failed; the server keeps what it was serving."""


def model_of_instance(instance: str) -> str:
    """`decision_0_0` -> `decision`: Triton names instances <model>_<group>_<index>."""
    return re.sub(r"(_\d+)+$", "", instance)


def stub_instances(server_pid: int) -> set[str]:
    """Instance names (`decision_0_0`, ...) of the live python stubs of a local tritonserver."""
    instances = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid and argv[0].endswith("triton_python_backend_stub"):
            names = [arg for arg in argv[1:] if INSTANCE_NAME.fullmatch(arg)]
            if names:
                instances.add(names[-1])
    return instances


class StubWatchdog:
    """Reloads any model whose python stub has died; a background thread.

    Given `server_pid` (a server on this machine) it watches the stub processes and reacts
    within `PROCESS_POLL_S` of one exiting. Otherwise it sends a probe query through the
    ensemble every `interval_s` (it shows in Triton's statistics and the route counter) and
    reloads the model a dead-stub error names. A model an operator unloaded is left alone.
    """

    PROCESS_POLL_S = 0.1

    def __init__(self, url: str, interval_s: float = 0.5, server_pid: int | None = None):
        self.url = url
        self.interval_s = interval_s
        self.server_pid = server_pid
        self.restarts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)

    def start(self) -> StubWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _reload(self, client: grpcclient.InferenceServerClient, model: str, why: str) -> None:
        log.warning("the python stub of %r died (%s); reloading the model", model, why)
        self.restarts.append(model)
        started = time.monotonic()
        try:
            # Returns once the dead instance is unloaded too, which can take much longer
            # than the new instance takes to start serving.
            client.load_model(model)
            log.info("%r reloaded with a fresh stub (%.1f s)", model, time.monotonic() - started)
        except InferenceServerException as err:
            log.error("could not reload %r: %s", model, err.message())

    def _probe(self, client: grpcclient.InferenceServerClient) -> None:
        tensor = grpcclient.InferInput("query", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[PROBE_QUERY.encode()]], dtype=np.object_))
        try:
            client.infer(ENSEMBLE, [tensor], client_timeout=10)
        except InferenceServerException as err:
            match = DEAD_STUB.search(err.message() or "")
            if match:
                self._reload(client, model_of_instance(match["instance"]), "a probe query failed")
            else:
                log.debug("watchdog probe failed: %s", err.message())

    def _watch_processes(self, client: grpcclient.InferenceServerClient, seen: set[str]) -> set[str]:
        live = stub_instances(self.server_pid)
        for instance in sorted(seen - live):
            model = model_of_instance(instance)
            try:
                ready = client.is_model_ready(model)
            except InferenceServerException:
                continue
            if ready:  # a model an operator unloaded is not ready
                self._reload(client, model, "its process exited")
        return stub_instances(self.server_pid) if seen - live else live

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        seen = stub_instances(self.server_pid) if self.server_pid else set()
        try:
            while not self._stop.wait(self.PROCESS_POLL_S if self.server_pid else self.interval_s):
                if self.server_pid:
                    seen = self._watch_processes(client, seen)
                else:
                    self._probe(client)
        finally:
            client.close()


@dataclass(frozen=True)
class Reloaded:
    model: str
    version: int


def _next_version(client: grpcclient.InferenceServerClient, model: str, headers: dict[str, str] | None) -> int:
    index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
    versions = [int(m["version"]) for m in index if m["name"] == model and m.get("version", "").isdigit()]
    return max(versions, default=0) + 1


def _load_with_files(client: grpcclient.InferenceServerClient, model: str, files: dict[str, bytes],
                     headers: dict[str, str] | None) -> Reloaded:
    """Load `files` (names inside the version directory) as the next version of `model`."""
    try:
        served = client.get_model_config(model, headers=headers, as_json=True)["config"]
        version = _next_version(client, model, headers)
        served["version_policy"] = {"specific": {"versions": [version]}}
        attached = {f"file:{version}/{name}": content for name, content in files.items()}
        client.load_model(model, headers=headers, config=json.dumps(served), files=attached)
    except InferenceServerException as err:
        hint = ("; this server restricts model control to requests that carry a header: pass the one it "
                "names with --header NAME=VALUE") if "restricted" in (err.message() or "").lower() else ""
        raise ReloadError(f"Triton refused the new {model!r} (still serving the old one): {err.message()}{hint}") \
            from None
    return Reloaded(model, version)


def _python_model(source: Path) -> bytes:
    # The header `model-selector serve` gives its runtime copies; where its environment
    # variable is unset (the production image) it does nothing.
    return (SYS_PATH_HEADER + source.read_text()).encode()


def _decision_files(decision_dir: Path, router_yaml: bytes) -> dict[str, bytes]:
    return {"model.py": _python_model(decision_dir / "model.py"), "router.yaml": router_yaml,
            "selectors.json": (decision_dir / "selectors.json").read_bytes()}


def reload_config(url: str, config_path: Path, repository: Path, headers: dict[str, str] | None = None) -> Reloaded:
    """Serve `config_path` as the decision model's router.yaml, with the repository's selectors.
    `headers` go with every call: Triton's restricted-protocol header, where model control needs one."""
    decision_dir = repository / layout.DECISION / layout.VERSION
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise ReloadError(f"refused, the server keeps its configuration: {err}") from None
    selectors = decision_dir / "selectors.json"
    trained = json.loads(selectors.read_text())["models"]
    if sorted(config.model_names) != sorted(trained):
        raise ReloadError(f"refused, the server keeps its configuration: {config_path}: the catalog "
                          f"({', '.join(config.model_names)}) differs from the models the selectors were trained on "
                          f"({', '.join(trained)}); a new catalog needs `model-selector build` and a restart")
    new_config = config_path.read_bytes()
    with grpcclient.InferenceServerClient(url) as client:
        reloaded = _load_with_files(client, layout.DECISION, _decision_files(decision_dir, new_config), headers)
    # The repository keeps what is served: a restart, or the watchdog reloading the model
    # from the repository, serves this configuration too.
    served_copy = decision_dir / "router.yaml"
    if served_copy.read_bytes() != new_config:
        temporary = served_copy.with_suffix(".yaml.new")
        temporary.write_bytes(new_config)
        temporary.replace(served_copy)
    return reloaded


def reload_selectors(url: str, repository: Path, headers: dict[str, str] | None = None) -> list[Reloaded]:
    """Serve the repository's rebuilt router_heads graph and selector metadata (same catalog)."""
    heads = repository / layout.HEADS / layout.VERSION / "model.onnx"
    decision_dir = repository / layout.DECISION / layout.VERSION
    with grpcclient.InferenceServerClient(url) as client:
        served = client.get_model_config(layout.HEADS, headers=headers, as_json=True)["config"]
        served_width = {o["name"]: o["dims"] for o in served["output"]}
        built = layout.read_config(repository / layout.HEADS / "config.pbtxt")
        built_width = {o.name: [str(d) for d in o.dims] for o in built.output}
        if built_width != served_width:
            raise ReloadError("refused: the rebuilt router_heads has other outputs than the served one "
                              f"({built_width} vs {served_width}); restart the server to change the catalog")
        reloaded = [_load_with_files(client, layout.HEADS, {"model.onnx": heads.read_bytes()}, headers)]
        reloaded.append(_load_with_files(client, layout.DECISION, _decision_files(
            decision_dir, (decision_dir / "router.yaml").read_bytes()), headers))
        return reloaded
