"""The machine's idle cores as a pool reads them (engine/idle_cpu.py), from a /proc/stat written by
the test and a clock it moves; and from the real /proc/stat."""

from cocaine.core.engine.idle_cpu import READING_WEIGHT, SAMPLE_EVERY, IdleCpu, _read_stat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_stat(path, user: int, idle: int, iowait: int = 0) -> None:
    # The first line sums every CPU: user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")


def test_idle_cores_a_moving_average_of_readings(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, user=1000, idle=1000)
    idle_cpu = IdleCpu(str(stat), clock, cores=4)
    assert idle_cpu() == 4.0  # nothing read over an interval yet: every core may be idle
    write_stat(stat, user=1040, idle=1000)  # 40 ticks, none idle
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 4.0 - READING_WEIGHT * 4.0  # 3.0: one reading of none moves it a quarter
    write_stat(stat, user=1040, idle=1030, iowait=10)  # waiting on I/O is idle too: 40 ticks, all idle
    clock.now += SAMPLE_EVERY * 0.51
    assert idle_cpu() == 3.0  # too soon for another reading
    clock.now += SAMPLE_EVERY * 0.51
    assert idle_cpu() == 3.25


def test_an_unreadable_stat_leaves_the_figure_as_it_was(tmp_path):
    stat, clock = tmp_path / "stat", Clock()
    write_stat(stat, user=1000, idle=1000)
    idle_cpu = IdleCpu(str(stat), clock, cores=2)
    write_stat(stat, user=1040, idle=1000)
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 1.5
    stat.write_text("garbage\n")
    clock.now += SAMPLE_EVERY * 1.01
    assert idle_cpu() == 1.5


def test_the_real_proc_stat_is_read_and_gives_between_none_and_all_of_the_cores():
    idle, total = _read_stat("/proc/stat")  # None (unreadable, another layout) fails here
    assert 0 < idle <= total
    idle_cpu = IdleCpu()
    idle_cpu._at -= SAMPLE_EVERY  # a reading is due
    sum(range(200_000))  # some ticks pass
    assert 0.0 <= idle_cpu() <= idle_cpu.cores
