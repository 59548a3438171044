"""The machine's idle cores as a pool reads them (engine/idle_cpu.py): from a /proc/stat written by
the test and a clock it moves, for the CPUs the process may run on and within its cgroup's CPU
quota (engine/cpu_quota.py, from cgroup files laid out by the test); and from the real /proc/stat
and a real cgroup with a quota."""

import os
import subprocess
import sys
import textwrap

import pytest

from cocaine.core.engine.cpu_quota import CpuQuota, _cgroup_mounts, find_cpu_quota
from cocaine.core.engine.idle_cpu import READING_WEIGHT, SAMPLE_EVERY, IdleCpu, _read_stat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_stat(path, *cpus: tuple[int, int, int]) -> None:
    """Each CPU's (user, idle, iowait) ticks; the first line sums them, as the kernel's does."""
    lines = []
    for name, (user, idle, iowait) in [("cpu ", tuple(map(sum, zip(*cpus))))] + [
            (f"cpu{n}", ticks) for n, ticks in enumerate(cpus)]:
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"{name} {user} 0 0 {idle} {iowait} 0 0 0 0 0")
    path.write_text("\n".join(lines) + "\nintr 1 2 3\n")


def test_idle_cores_a_moving_average_of_readings(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, *[(250, 250, 0)] * 4)
    idle_cpu = IdleCpu(str(stat), clock, cpus=range(4))
    assert idle_cpu() == 4.0  # nothing read over an interval yet: every core may be idle
    write_stat(stat, *[(260, 250, 0)] * 4)  # 10 ticks each, none idle
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 4.0 - READING_WEIGHT * 4.0  # 3.0: one reading of none moves it a quarter
    write_stat(stat, *[(260, 257, 3)] * 4)  # waiting on I/O is idle too: 10 ticks each, all idle
    clock.now += SAMPLE_EVERY * 0.51
    assert idle_cpu() == 3.0  # too soon for another reading
    clock.now += SAMPLE_EVERY * 0.51
    assert idle_cpu() == 3.25


def test_while_another_thread_reads_the_figure_is_returned_as_it_is(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, *[(250, 250, 0)] * 4)
    idle_cpu = IdleCpu(str(stat), clock, cpus=range(4))
    write_stat(stat, *[(260, 250, 0)] * 4)
    clock.now += SAMPLE_EVERY * 1.01
    with idle_cpu._reading:  # another engine's thread is reading
        assert idle_cpu() == 4.0
    assert idle_cpu() == 3.0  # the reading is still due


def test_only_the_cpus_the_process_may_run_on_count(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0))
    idle_cpu = IdleCpu(str(stat), clock, cpus={1, 3})  # as `taskset -c 1,3` or a cpuset leave it
    assert idle_cpu() == 2.0
    write_stat(stat, (0, 10, 0), (10, 0, 0), (0, 10, 0), (5, 5, 0))  # 0 and 2 idle: not ours
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 2.0 + READING_WEIGHT * (0.5 - 2.0)  # half of CPU 3 idle, none of CPU 1


def test_an_unreadable_stat_leaves_the_figure_as_it_was(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, (500, 500, 0), (500, 500, 0))
    idle_cpu = IdleCpu(str(stat), clock, cpus={0, 1})
    write_stat(stat, (520, 500, 0), (520, 500, 0))
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 1.5
    stat.write_text("garbage\n")
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 1.5


def test_a_cpu_quota_caps_the_idle_cores_at_what_it_leaves_unused(tmp_path):
    stat, usage, clock = tmp_path / "stat", tmp_path / "cpuacct.usage", Clock()
    write_stat(stat, *[(0, 0, 0)] * 8)
    usage.write_text("0\n")
    idle_cpu = IdleCpu(str(stat), clock, cpus=range(8), quota=CpuQuota(1.5, str(usage), 1e-9))
    assert idle_cpu.cores == 1.5 and idle_cpu() == 1.5  # of 8 CPUs, the quota lets it use 1.5
    write_stat(stat, *[(1, 9, 0)] * 8)  # the machine: 7.2 cores idle
    usage.write_text(f"{int(1.25 * 0.2e9)}\n")  # the cgroup: 1.25 cores used over 0.2 s
    clock.now += 0.2
    assert idle_cpu() == pytest.approx(1.5 + READING_WEIGHT * (0.25 - 1.5))
    write_stat(stat, *[(2, 18, 0)] * 8)
    usage.write_text("gone")  # unreadable: the machine's figure, within the quota
    clock.now += 0.2
    assert idle_cpu() == pytest.approx(1.1875 + READING_WEIGHT * (1.5 - 1.1875))


def lay_out(root, cgroup: str, mounts: list[str], files: dict[str, str]) -> None:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text("".join(f"{n} 1 0:{n} {m}\n" for n, m in enumerate(mounts, 30)))
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_cgroup_v2_the_tightest_quota_of_the_cgroup_and_its_ancestors(tmp_path):
    lay_out(tmp_path, "0::/apps.slice/cocaine.service\n",
            ["/ /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"],
            {"sys/fs/cgroup/apps.slice/cocaine.service/cpu.max": "max 100000\n",
             "sys/fs/cgroup/apps.slice/cpu.max": "150000 100000\n",
             "sys/fs/cgroup/apps.slice/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n"})
    quota = find_cpu_quota(str(tmp_path))
    assert quota.cores == 1.5 and quota.used() == 2.5  # apps.slice's quota, and its usage


def test_cgroup_v1_seen_from_a_container_whose_cgroup_is_its_mount(tmp_path):
    # Docker without a cgroup namespace: the path names the host's cgroup, mounted as the root.
    lay_out(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
            ["/docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory",
             "/docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct"],
            {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
             "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
             "sys/fs/cgroup/cpu,cpuacct/cpuacct.usage": "3000000000\n"})
    quota = find_cpu_quota(str(tmp_path))
    assert quota.cores == 0.5 and quota.used() == 3.0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_no_quota(tmp_path, version):
    if version == "v2":
        lay_out(tmp_path, "0::/\n", ["/ /sys/fs/cgroup rw - cgroup2 cgroup2 rw"],
                {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    else:
        lay_out(tmp_path, "2:cpuacct:/\n1:cpu:/\n",
                ["/ /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
                 "/ /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct"],
                {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert find_cpu_quota(str(tmp_path)) is None
    assert find_cpu_quota(str(tmp_path / "nowhere")) is None  # nothing readable: no quota either


def test_the_real_proc_stat_is_read_and_gives_between_none_and_all_of_the_cores():
    cpus = frozenset(os.sched_getaffinity(0))
    idle, total = _read_stat("/proc/stat", cpus)  # None (unreadable, another layout) fails here
    assert 0 < idle <= total
    idle_cpu = IdleCpu()
    assert idle_cpu.cpus == cpus
    idle_cpu._at -= SAMPLE_EVERY  # a reading is due
    sum(range(200_000))  # some ticks pass
    assert 0.0 <= idle_cpu() <= idle_cpu.cores


def cpu_cgroup_with_quota(name: str, cores: float) -> list[str] | None:
    """Make a cgroup with a CPU quota (as root, v2 or v1) and return the files that move a process
    into it (v1 may count its CPU time in a hierarchy of its own); None if this machine does not
    let us."""
    period = 100_000
    for fstype, _, mount_point, options in _cgroup_mounts("/"):
        folder = os.path.join(mount_point, name)
        try:
            if fstype == "cgroup2" and "cpu" in open(os.path.join(mount_point, "cgroup.controllers")).read().split():
                with open(os.path.join(mount_point, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu")
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "cpu.max"), "w") as f:
                    f.write(f"{int(cores * period)} {period}")
                return [os.path.join(folder, "cgroup.procs")]
            if fstype == "cgroup" and "cpu" in options:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "cpu.cfs_period_us"), "w") as f:
                    f.write(str(period))
                with open(os.path.join(folder, "cpu.cfs_quota_us"), "w") as f:
                    f.write(str(int(cores * period)))
                procs = [os.path.join(folder, "cgroup.procs")]
                if "cpuacct" not in options:  # its usage is counted apart: the same cgroup there too
                    [accounting] = [m[2] for m in _cgroup_mounts("/") if m[0] == "cgroup" and "cpuacct" in m[3]]
                    os.makedirs(os.path.join(accounting, name), exist_ok=True)
                    procs.append(os.path.join(accounting, name, "cgroup.procs"))
                return procs
        except OSError:
            continue
    return None


def test_a_process_that_uses_its_whole_cpu_quota_has_no_core_to_spare():
    """A real cgroup: the quota is found, and the process's own busy loop uses all of it, while the
    machine may well have a core idle."""
    name = f"cocaine-test-{os.getpid()}"
    procs = cpu_cgroup_with_quota(name, 0.5)
    if not procs:
        pytest.skip("cannot make a cgroup with a CPU quota here (needs root and the cpu controller)")
    script = textwrap.dedent(f"""
        import os, time
        for procs in {procs!r}:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        from cocaine.core.engine.cpu_quota import find_cpu_quota
        from cocaine.core.engine.idle_cpu import IdleCpu
        quota = find_cpu_quota()
        idle_cpu = IdleCpu(quota=quota)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # busy: the quota is all used
            idle_cpu()
        print(quota.cores, idle_cpu())
    """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        for path in procs:
            os.rmdir(os.path.dirname(path))
    assert out.returncode == 0, out.stderr
    cores, idle = map(float, out.stdout.split())
    assert cores == 0.5 and idle < 0.15
