"""
Sampling this machine's resources with psutil, without blocking.

CPU percentages come from psutil's own delta since the previous call
(C{interval=None}); disk and network rates from the delta between two
samples of the cumulative counters.
"""

import os

import psutil

# Filesystems that hold no user data: skipped even when psutil calls them physical.
_IGNORED_FSTYPES = frozenset({
    "squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2",
    "autofs", "nsfs", "tracefs", "debugfs", "securityfs", "pstore", "ramfs", "iso9660",
})

# Seconds the list of mounted filesystems is reused before it is read again:
# reading it (/proc/self/mounts, parsed) was half of a sample's cost, and
# mounts change rarely. Their usage is still read on every sample.
PARTITIONS_REFRESH = 30.0


class Sampler:
    """
    Takes samples of CPU, memory, swap, load, filesystems, disk I/O and
    network I/O.

    @param psutil: the psutil module, or a stand-in for tests.
    @param monotonic: a monotonic clock for rate computation.
    """

    def __init__(self, psutil=psutil, monotonic=None):
        import time
        self._psutil = psutil
        self._monotonic = monotonic or time.monotonic
        self._previous = None
        self._partitions = None
        self._partitionsRead = None
        # Prime psutil's CPU counters: the first interval=None call returns 0.0.
        self._psutil.cpu_percent(interval=None)
        self._psutil.cpu_percent(interval=None, percpu=True)

    def sample(self):
        """
        Return the metrics dict of one measure (see C{docs/protocol.md}).
        """
        ps = self._psutil
        now = self._monotonic()
        memory = ps.virtual_memory()
        swap = ps.swap_memory()
        metrics = {
            "cpu": {
                "percent": _clampPercent(ps.cpu_percent(interval=None)),
                "per_core": [_clampPercent(p) for p in ps.cpu_percent(interval=None, percpu=True)],
            },
            "memory": {
                "total": memory.total, "used": memory.used,
                "available": memory.available, "percent": _clampPercent(memory.percent),
            },
            "swap": {
                "total": swap.total, "used": swap.used,
                "free": swap.free, "percent": _clampPercent(swap.percent),
            },
            "disks": self._disks(),
        }
        try:
            metrics["load"] = [round(x, 2) for x in ps.getloadavg()]
        except (AttributeError, OSError):
            pass
        # nowrap=False: a counter going backwards gives no rate (see _rates),
        # which spares psutil's own bookkeeping of wrapped counters.
        counters = (now, _read(ps.disk_io_counters, nowrap=False),
                    _read(ps.net_io_counters, nowrap=False))
        metrics["disk_io"] = _rates(
            self._previous, counters, 1,
            {"read_bytes": "read_bytes_per_s", "write_bytes": "write_bytes_per_s",
             "read_count": "read_ops_per_s", "write_count": "write_ops_per_s"})
        metrics["net_io"] = _rates(
            self._previous, counters, 2,
            {"bytes_sent": "bytes_sent_per_s", "bytes_recv": "bytes_recv_per_s",
             "packets_sent": "packets_sent_per_s", "packets_recv": "packets_recv_per_s"})
        self._previous = counters
        return metrics

    def _mountedPartitions(self):
        now = self._monotonic()
        if self._partitions is None or now - self._partitionsRead >= PARTITIONS_REFRESH \
                or now < self._partitionsRead:
            self._partitions = self._psutil.disk_partitions(all=False)
            self._partitionsRead = now
        return self._partitions

    def _disks(self):
        disks = []
        seen = set()
        for partition in self._mountedPartitions():
            if partition.fstype in _IGNORED_FSTYPES or partition.device in seen:
                continue
            seen.add(partition.device)
            try:
                usage = self._psutil.disk_usage(partition.mountpoint)
            except OSError:
                continue  # unmounted meanwhile, or not ours to read
            disks.append({
                "mount": partition.mountpoint, "device": partition.device,
                "fstype": partition.fstype, "total": usage.total, "used": usage.used,
                "free": usage.free, "percent": _clampPercent(usage.percent),
            })
        return disks


def _read(counter, **options):
    try:
        return counter(**options)
    except (OSError, RuntimeError):
        return None


def _rates(previous, current, index, fields):
    """
    Per-second rates of C{fields} between two samples; L{None} where there
    is no previous sample, or a counter went backwards (it wrapped or reset).
    """
    rates = dict.fromkeys(fields.values())
    if previous is None or previous[index] is None or current[index] is None:
        return rates
    elapsed = current[0] - previous[0]
    if elapsed <= 0:
        return rates
    for field, name in fields.items():
        delta = getattr(current[index], field) - getattr(previous[index], field)
        if delta >= 0:
            rates[name] = round(delta / elapsed, 2)
    return rates


def _clampPercent(value):
    return min(100.0, max(0.0, float(value)))


def defaultHostName():
    """
    The machine's short host name.
    """
    return os.uname().nodename.split(".")[0] or "localhost"
