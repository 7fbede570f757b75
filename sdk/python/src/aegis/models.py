"""Typed models of the API's JSON (``api/openapi.json``, components/schemas).

Each dataclass names its schema in ``__schema__``; its fields are the schema's properties,
required ones without a default. Unknown fields in an answer are ignored (a newer daemon may
add some); ``tests/test_models.py`` fails when the two drift apart.
"""

from __future__ import annotations

import base64
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

T = TypeVar("T")


def from_json(cls: type[T], data: Any) -> T:
    """Builds model ``cls`` (a dataclass of this module) from decoded JSON ``data``."""
    return _convert(cls, data)  # type: ignore[return-value]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        _HINTS[cls] = h
    return h


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value)
    if value is None:
        return None
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if origin is tuple:
        return tuple(_convert(a, v) for a, v in zip(typing.get_args(tp), value))
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: _convert(vt, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            if f.name in value:
                kwargs[f.name] = _convert(hints[f.name], value[f.name])
        return tp(**kwargs)
    return value


def to_json(obj: Any) -> Any:
    """The JSON form of a model (``None`` fields left out, as the daemon's own omits them)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_json(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------- shared pieces


@dataclass
class PortSpec:
    """One exposed port: ``PortSpec(8000, "http")``; ``host_port`` None or 0: assigned."""

    __schema__: ClassVar[str] = "PortSpec"
    guest_port: int
    protocol: str
    host_port: int | None = None


@dataclass
class Endpoint:
    """Where an exposed port is reachable on the host (``url`` e.g. ``http://127.0.0.1:41234``)."""

    __schema__: ClassVar[str] = "Endpoint"
    guest_port: int
    host_port: int
    protocol: str
    url: str


@dataclass
class TtySize:
    __schema__: ClassVar[str] = "TtySize"
    rows: int
    cols: int


# ---------------------------------------------------------------- tasks


@dataclass
class Task:
    """A task (``GET /v1/tasks/{id}``): ``state`` is booting, running, exited, failed,
    timed_out or cancelled; ``exit_code`` is set once it exited."""

    __schema__: ClassVar[str] = "Task"
    id: str
    state: str
    command: list[str]
    image: str
    vcpus: int
    memory_mib: int
    created_at: str
    stdout_bytes: int
    stderr_bytes: int
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    guest_kernel: str | None = None
    artifacts_dir: str | None = None
    timeout_secs: int | None = None
    workspace: str | None = None

    @property
    def ended(self) -> bool:
        return self.state not in ("booting", "running")


@dataclass
class Output:
    """An ``output`` event of a feed: ``data`` (decoded bytes) of ``stream`` ("stdout" or
    "stderr") starting at byte ``offset`` of that stream."""

    __schema__: ClassVar[str] = "OutputEvent/output"
    stream: str
    offset: int
    data: bytes

    @classmethod
    def _from_wire(cls, d: dict[str, Any]) -> "Output":
        return cls(stream=d["stream"], offset=d["offset"], data=base64.b64decode(d["data"]))

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class End:
    """The ``end`` event of a task's feed: the task ended and every byte was sent."""

    __schema__: ClassVar[str] = "OutputEvent/end"
    task: Task


OutputEvent = Union[Output, End]


# ---------------------------------------------------------------- instances


@dataclass
class ServeTarget:
    """What an instance serves (``POST /v1/instances``, schema ``CreateInstance``)::

        ServeTarget(command=["python3", "-m", "http.server", "8000"],
                    expose=[PortSpec(8000, "http")], name="web")
    """

    __schema__: ClassVar[str] = "CreateInstance"
    command: list[str]
    expose: list[PortSpec]
    name: str | None = None
    image: str | None = None
    env: dict[str, str] | None = None
    workdir: str | None = None
    user: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    idle_policy: str | None = None
    pause_after_secs: int | None = None
    terminate_after_secs: int | None = None
    wake_timeout_secs: int | None = None
    loading_page: bool | None = None
    workspace: str | None = None
    app: str | None = None
    release: int | None = None


@dataclass
class WakeStats:
    __schema__: ClassVar[str] = "WakeStats"
    cold_boots: int
    snapshot_restores: int
    resumes: int
    pauses: int
    terminations: int


@dataclass
class Instance:
    """An instance: ``state`` is booting, running, paused, terminated or error."""

    __schema__: ClassVar[str] = "Instance"
    id: str
    name: str
    state: str
    target: ServeTarget
    endpoints: list[Endpoint]
    created_at: str
    last_active_at: str
    active_connections: int
    snapshot_cached: bool
    stats: WakeStats
    guest_kernel: str | None = None
    last_error: str | None = None


@dataclass
class Lease:
    """A live lease that keeps an instance awake until ``expires_at``."""

    __schema__: ClassVar[str] = "Lease"
    id: str
    instance: str
    ttl_secs: int
    created_at: str
    expires_at: str
    expires_in_ms: int
    holder: str | None = None


@dataclass
class PortConnections:
    __schema__: ClassVar[str] = "PortConnections"
    guest_port: int
    protocol: str
    open: int


@dataclass
class ActivityHolder:
    __schema__: ClassVar[str] = "ActivityHolder"
    kind: str
    label: str
    held_for_ms: int


@dataclass
class IdleTimers:
    __schema__: ClassVar[str] = "IdleTimers"
    pauses_in_ms: int | None = None
    terminates_in_ms: int | None = None


@dataclass
class AwakeBecause:
    """Why an instance is (or stays) awake now."""

    __schema__: ClassVar[str] = "AwakeBecause"
    connections: list[PortConnections]
    holders: list[ActivityHolder]
    leases: list[Lease]
    timers: IdleTimers


# ---------------------------------------------------------------- exec


@dataclass
class Exec:
    """A process started in an instance: ``state`` is running, exited or failed."""

    __schema__: ClassVar[str] = "Exec"
    id: str
    instance: str
    command: list[str]
    state: str
    stdout_bytes: int
    stderr_bytes: int
    created_at: str
    exit_code: int | None = None
    error: str | None = None


# ---------------------------------------------------------------- files


@dataclass
class FileInfo:
    """One guest path as ``lstat`` sees it; ``entries`` only from ``list_dir``."""

    __schema__: ClassVar[str] = "FileInfo"
    name: str
    kind: str
    size: int
    mode: int
    mtime: int
    link: str | None = None
    entries: list["FileInfo"] | None = None


@dataclass
class WatchEvent:
    """One change in a watched directory (``kind``: created, written, deleted, moved_in,
    moved_out, overflow)."""

    __schema__: ClassVar[str] = "WatchEvent"
    kind: str
    name: str
    dir: bool = False


# ---------------------------------------------------------------- images


@dataclass
class ImageInfo:
    __schema__: ClassVar[str] = "ImageInfo"
    reference: str
    kind: str
    size_bytes: int
    layers: int
    digest: str | None = None
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""


@dataclass
class PullProgress:
    """A pull's progress: ``done`` of ``total`` bytes (or steps)."""

    __schema__: ClassVar[str] = "PullEvent/progress"
    message: str
    done: int
    total: int | None = None


@dataclass
class PullDone:
    """The pulled image is stored and ready to boot."""

    __schema__: ClassVar[str] = "PullEvent/done"
    image: ImageInfo


PullEvent = Union[PullProgress, PullDone]


# ---------------------------------------------------------------- apps


@dataclass
class AppServing:
    __schema__: ClassVar[str] = "AppServing"
    release: int
    instance: Instance


@dataclass
class App:
    __schema__: ClassVar[str] = "App"
    name: str
    image: str
    expose: list[PortSpec]
    created_at: str
    command: list[str] = field(default_factory=list)
    latest_release: int | None = None
    serving: AppServing | None = None


@dataclass
class AppServed:
    __schema__: ClassVar[str] = "AppServed"
    app: str
    release: int
    instance: Instance
    previous_release: int | None = None


@dataclass
class ReleaseLayer:
    __schema__: ClassVar[str] = "ReleaseLayer"
    digest: str
    media_type: str
    size: int


@dataclass
class ReleaseConfig:
    __schema__: ClassVar[str] = "ReleaseConfig"
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""
    working_dir: str = ""


@dataclass
class Release:
    __schema__: ClassVar[str] = "Release"
    app: str
    number: int
    image: str
    manifest_digest: str
    layers: list[ReleaseLayer]
    config: ReleaseConfig
    created_at: str
    label: str | None = None


# ---------------------------------------------------------------- workspaces


@dataclass
class Workspace:
    __schema__: ClassVar[str] = "Workspace"
    name: str
    mode: str
    path: str
    size_bytes: int
    created_at: str
    used_by: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- daemon


@dataclass
class CapabilitiesInfo:
    __schema__: ClassVar[str] = "CapabilitiesInfo"
    pause: bool
    memory_snapshot: bool
    vsock: bool
    virtio_fs: bool
    accelerator: str


@dataclass
class Limits:
    __schema__: ClassVar[str] = "Limits"
    max_live_vms: int
    max_instances: int
    max_exposed_ports: int
    instance_log_bytes: int
    instance_log_rotated_files: int
    task_output_bytes: int
    console_log_bytes: int
    max_blob_bytes: int
    max_layer_unpacked_bytes: int
    max_artifact_bytes: int
    free_disk_reserve_bytes: int


@dataclass
class Status:
    """``GET /v1/status``: the daemon's version, backend, capabilities and limits."""

    __schema__: ClassVar[str] = "Status"
    status: str
    version: str
    pid: int
    backend: str
    capabilities: CapabilitiesInfo
    home: str
    tasks_running: int
    builtin_images: list[str] = field(default_factory=list)
    instances: int = 0
    limits: Limits | None = None
    router_addr: str = ""


# ---------------------------------------------------------------- results of conveniences


@dataclass
class RunResult:
    """What :meth:`Aegis.run` returns: the ended task and its whole output."""

    task: Task
    stdout: bytes
    stderr: bytes

    @property
    def exit_code(self) -> int | None:
        """The command's exit code (None when the task failed before or without one)."""
        return self.task.exit_code

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass
class ExecResult:
    """What :meth:`Aegis.exec` returns: the ended exec and its whole output."""

    exec: Exec
    stdout: bytes
    stderr: bytes

    @property
    def exit_code(self) -> int | None:
        return self.exec.exit_code

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


#: Every model checked against ``api/openapi.json`` by the tests.
SCHEMA_MODELS: list[type] = [
    PortSpec, Endpoint, TtySize, Task, Output, End, ServeTarget, WakeStats, Instance, Lease,
    PortConnections, ActivityHolder, IdleTimers, AwakeBecause, Exec, FileInfo, WatchEvent,
    ImageInfo, PullProgress, PullDone, AppServing, App, AppServed, ReleaseLayer, ReleaseConfig,
    Release, Workspace, CapabilitiesInfo, Limits, Status,
]
