"""SSH: a board or laptop measured on itself (adapter `ssh`). The job runs on the device, in the device's own
`python -m slmbench.executors.worker` (started there by executors/ssh.py); this adapter is what that worker uses
there: the device's CPU threads, its peak RSS, its own energy sensor.

A profile (devices/<name>.yaml, `adapter: ssh`) says how to reach the device under `extra:` (SshSettings): host,
port, user, the PATH of a private key file (or none: the ssh agent), the PATH of a known_hosts file (none: the
user's ~/.ssh/known_hosts), the device's Python and a work directory there. Never a password or key material: a
profile holding one is refused at validation. Host keys are always verified against known_hosts; an unknown or
changed key is refused (the job is recorded `error` with that line).

Energy (`extra.energy_sensor`, see adapters/energy.py): rapl | hwmon:NAME | battery:NAME | estimate, read on the
device. None configured: an estimate from per_core_active_w when the profile has it, else no energy figure (the
energy scenario records an empty row saying so; capabilities are per adapter class, so `energy` is declared).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..contracts import register_adapter
from ..contracts.adapter import BANDWIDTH, ENERGY, HOST_CPU, MEMORY, RUNS_MODELS
from . import host_info
from .cpu import CpuAdapter
from .energy import SENSORS, SensorError, sensor_meter

SECRET_FIELDS = ("password", "passphrase", "private_key", "pkey", "key", "key_data", "secret", "token")


class SshSettings(BaseModel):
    """`extra:` of an ssh profile."""
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1, description="host name or address of the device")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_file: str | None = Field(None, description="PATH of a private key (unencrypted, or use the agent); "
                                 "none: keys from the ssh agent ($SSH_AUTH_SOCK)")
    known_hosts: str | None = Field(None, description="PATH of the known_hosts file; none: ~/.ssh/known_hosts")
    remote_python: str = Field("python3", min_length=1, description="the device's Python, with slmbench installed")
    remote_workdir: str = Field(min_length=1, description="a directory on the device for job files (and, unless "
                                "remote_cache_dir is set, the model cache under cache/)")
    remote_cache_dir: str | None = Field(None, description="SLMBENCH_CACHE_DIR on the device")
    remote_data_dir: str | None = Field(None, description="SLMBENCH_DATA_DIR on the device")
    connect_timeout_s: float = Field(10, gt=0)
    silence_s: float = Field(30, gt=0, description="no byte from the device for this long (it sends a heartbeat "
                             "every 5 s): the connection is taken as lost")
    min_free_mb: float = Field(200, ge=0, description="free space the device's work directory needs to start a job")
    energy_sensor: str | None = Field(None, description=f"{' | '.join(SENSORS)}")
    energy_sample_hz: float | None = Field(None, gt=0, le=100, description="sampled sensors (hwmon, battery)")

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _a_path(cls, v):
        if v is not None and ("BEGIN" in v or "\n" in v or len(v) > 1024):
            raise ValueError("must be a file path, never key material")
        return v

    @field_validator("energy_sensor")
    @classmethod
    def _sensor(cls, v):
        if v is None:
            return v
        kind, _, name = v.partition(":")
        if not ((kind in ("rapl", "estimate") and not name) or (kind in ("hwmon", "battery") and name)):
            raise ValueError(f"expected one of {', '.join(SENSORS)}, got {v!r}")
        return v


def settings_of(profile) -> SshSettings:
    return SshSettings(**profile.extra)


@register_adapter
class SshAdapter(CpuAdapter):
    """On the device: the device's CPU (threads, peak RSS as the cpu adapter), its own energy sensor, and its own
    memory bandwidth (the profile's figure, else measured once on the device by the launcher and cached there), so
    its rows have the same shape as a local CPU job's, rooflines included."""
    name = "ssh"
    capabilities = frozenset({RUNS_MODELS, HOST_CPU, MEMORY, ENERGY, BANDWIDTH})

    def __init__(self, profile, threads: int | None = None):
        super().__init__(profile, threads)
        self.settings = settings_of(profile)
        self._meter = None

    Settings = SshSettings  # its `extra:`, validated by Adapter.check_profile after the secrets check

    @classmethod
    def check_profile(cls, profile, file: str) -> None:
        from ..errors import UserError
        for k in profile.extra:
            if k.lower() in SECRET_FIELDS:
                raise UserError("a password or key material never goes in a profile: name a key file (key_file: "
                                "PATH) or use an ssh agent", file=file, field=f"extra.{k}")
        super().check_profile(profile, file)

    def energy_meter(self):
        if self._meter is not None:
            return self._meter
        s = self.settings
        if s.energy_sensor is None:
            if self.profile.per_core_active_w is None:
                return None
            self._meter = sensor_meter("estimate", self.profile.per_core_active_w)
            return self._meter
        try:
            self._meter = sensor_meter(s.energy_sensor, self.profile.per_core_active_w, hz=s.energy_sample_hz)
        except SensorError as e:
            from ..errors import JobError
            raise JobError("error", f"energy_sensor {s.energy_sensor!r} on {host_info()['hostname']}: {e}")
        return self._meter

    def bandwidth(self) -> dict | None:
        bw = self.profile.memory_bandwidth_gbs
        return {"gbs": bw, "method": "device profile"} if bw else super().bandwidth()

    def info(self) -> dict:
        return {**super().info(), "adapter": "ssh", "ssh_host": self.settings.host,
                "energy_sensor": self.settings.energy_sensor}
