"""The CPU quota of this process's cgroup, in cores, and the CPU time that cgroup has used: what a
container's CPU limit leaves the daemon and its workers, which /proc/stat (the whole machine) does
not show.

Both cgroup versions are read: v2 (``cpu.max``, ``cpu.stat``'s ``usage_usec``) and v1
(``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``, ``cpuacct.usage``). The cgroup is found through
/proc/self/cgroup and /proc/self/mountinfo, so a container that sees its own cgroup mounted as the
root of the hierarchy is read as well as a host. The tightest quota of the cgroup and its ancestors
applies, and the usage counted against it is that cgroup's (the workers, children in the same
cgroup, share it with the daemon).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuQuota:
    cores: float  # the quota: CPU seconds per second
    usage_file: str | None  # the limiting cgroup's CPU time so far (None: not found)
    usage_unit: float  # seconds per unit of that file's figure
    usage_key: bytes | None = None  # the line of the file that holds it (cgroup v2's cpu.stat)

    def used(self) -> float | None:
        """CPU seconds the limiting cgroup has used so far; None if unknown."""
        if self.usage_file is None:
            return None
        try:
            with open(self.usage_file, "rb") as f:
                for line in f:
                    fields = line.split()
                    if self.usage_key is None:
                        return int(fields[0]) * self.usage_unit
                    if len(fields) == 2 and fields[0] == self.usage_key:
                        return int(fields[1]) * self.usage_unit
        except (OSError, ValueError, IndexError):
            pass
        return None


def find_cpu_quota(root: str = "/") -> CpuQuota | None:
    """This process's CPU quota, or None if it has none (or no cgroup can be read). ``root``
    prefixes every path read (tests give a folder laid out like the real files)."""
    memberships = _memberships(root)
    mounts = _cgroup_mounts(root)
    quota = None
    if "" in memberships:  # cgroup v2: the line "0::/path"
        quota = _v2_quota(root, mounts, memberships[""])
    if quota is None and "cpu" in memberships:
        quota = _v1_quota(root, mounts, memberships)
    return quota


def _memberships(root: str) -> dict[str, str]:
    """Controller (v1; "" for the v2 hierarchy) -> this process's cgroup path in its hierarchy."""
    found: dict[str, str] = {}
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(",") if controllers else [""]:
                    found[controller] = path
    except (OSError, ValueError):
        pass
    return found


def _cgroup_mounts(root: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, the mount's root in its hierarchy, mount point, super options) of each cgroup mount."""
    mounts = []
    try:
        with open(os.path.join(root, "proc/self/mountinfo")) as f:
            for line in f:
                before, _, after = line.partition(" - ")
                fields, tail = before.split(), after.split()
                if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                    mounts.append((tail[0], fields[3], fields[4], set(tail[2].split(","))))
    except OSError:
        pass
    return mounts


def _cgroup_folders(root: str, mount_root: str, mount_point: str, path: str) -> list[str]:
    """The cgroup's folder under its mount, then each ancestor's up to the mount point. A cgroup
    outside the mount's root (a container's own view of the hierarchy) is the mount point itself."""
    base = os.path.join(root, mount_point.lstrip("/"))
    within = mount_root == "/" or path == mount_root or path.startswith(mount_root + "/")
    inner = path[len(mount_root):] if within else ""
    parts = [p for p in inner.split("/") if p]
    return [os.path.join(base, *parts[:n]) for n in range(len(parts), -1, -1)]


def _tightest(folders: list[str], read) -> tuple[float, str] | None:
    """The smallest quota (cores) that ``read(folder)`` finds among ``folders``, and its folder."""
    best = None
    for folder in folders:
        cores = read(folder)
        if cores is not None and (best is None or cores < best[0]):
            best = (cores, folder)
    return best


def _v2_quota(root: str, mounts, path: str) -> CpuQuota | None:
    for fstype, mount_root, mount_point, _ in mounts:
        if fstype == "cgroup2":
            found = _tightest(_cgroup_folders(root, mount_root, mount_point, path), _read_cpu_max)
            if found is not None:
                return CpuQuota(found[0], os.path.join(found[1], "cpu.stat"), 1e-6, b"usage_usec")
    return None


def _v1_quota(root: str, mounts, memberships: dict[str, str]) -> CpuQuota | None:
    for fstype, mount_root, mount_point, options in mounts:
        if fstype == "cgroup" and "cpu" in options:
            folders = _cgroup_folders(root, mount_root, mount_point, memberships["cpu"])
            found = _tightest(folders, _read_cfs_quota)
            if found is None:
                return None
            # Its usage: cpuacct, mounted with cpu or apart, at the same place in its hierarchy.
            relative = os.path.relpath(found[1], os.path.join(root, mount_point.lstrip("/")))
            for fstype2, _, accounting_point, options2 in mounts:
                if fstype2 == "cgroup" and "cpuacct" in options2:
                    usage = os.path.normpath(os.path.join(root, accounting_point.lstrip("/"), relative,
                                                          "cpuacct.usage"))
                    return CpuQuota(found[0], usage, 1e-9)
            return CpuQuota(found[0], None, 0.0)  # a quota, but no usage to tell what is left of it
    return None


def _read_cpu_max(folder: str) -> float | None:
    """cgroup v2: "max 100000" (no quota) or "QUOTA PERIOD" in microseconds."""
    try:
        with open(os.path.join(folder, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _read_cfs_quota(folder: str) -> float | None:
    """cgroup v1: cpu.cfs_quota_us (-1: no quota) over cpu.cfs_period_us."""
    try:
        with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None
