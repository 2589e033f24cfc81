"""What the benchmark scripts share: their knobs from the environment, percentiles, and a process's
CPU time and memory read from /proc."""

import os

TICK = os.sysconf("SC_CLK_TCK")


def knobs(**defaults):
    """The environment's value of each knob, converted to the type of its default (int, float or
    str); the default where the variable is unset. Returned in the order given."""
    return [type(default)(os.environ.get(name, default)) for name, default in defaults.items()]


def pct(values, p):
    """The `p`th percentile of `values` (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def proc_mib(path, key):
    """The kB figure of the line starting with `key` in a /proc file (`VmRSS:` of
    /proc/PID/status, `MemAvailable:` of /proc/meminfo) in MiB, or None without that line."""
    with open(path) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return None


def rss_mib(pid):
    """The resident memory of process `pid` (VmRSS) in MiB."""
    return proc_mib(f"/proc/{pid}/status", "VmRSS:")


def cpu_s(pid):
    """The CPU seconds process `pid` has used (utime + stime, fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK
