//! Machine facts that size the daemon: usable cores and memory, cgroup limits included.

/// Worker threads: the cores this process may use (`available_parallelism` honours CPU
/// affinity and cgroup quotas).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Memory available to this process: `MemAvailable`, lowered to what the cgroup (v2 or v1)
/// still allows when a container limit is set.
pub fn available_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let host = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(4 << 30, |kb| kb * 1024);
    let cgroup_room = read_u64("/sys/fs/cgroup/memory.max")
        .zip(read_u64("/sys/fs/cgroup/memory.current"))
        .or_else(|| {
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                .zip(read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        })
        .map(|(limit, used)| limit.saturating_sub(used));
    cgroup_room.map_or(host, |room| room.min(host))
}

/// The decoded-audio cache gets a quarter of the available memory: the training job
/// needs the rest.
pub fn default_cache_bytes() -> u64 {
    available_memory() / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_sane() {
        assert!(default_workers() >= 1);
        let mem = available_memory();
        assert!(mem > 16 << 20, "{mem}");
        assert_eq!(default_cache_bytes(), mem / 4);
    }
}
