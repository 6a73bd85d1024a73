"""monitoring: health of the machine the workstation runs on.

Public surface:
- `system_stats(disk_path) -> SystemStats` (CPU, memory, disk, process memory and uptime via psutil)
"""

from monitoring.system import SystemStats, system_stats

__all__ = ["SystemStats", "system_stats"]
