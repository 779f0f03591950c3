//! What the kernel says about this process: resident memory, CPU time and the memory limit,
//! read from /proc (and the cgroup v2 tree). Each read is one small file; `None` when the file
//! is missing or not in the expected form (a container without /proc, an old kernel).

use std::fs;

/// Resident set size, from `VmRSS` in /proc/self/status.
///
/// Not /proc/self/statm: that counts pages, and turning pages into bytes needs the page
/// size, which is not 4096 everywhere (arm64 and ppc64 kernels often use 16 or 64 KiB);
/// `VmRSS` is in kB whatever the page size. Both report the same kernel counter.
pub fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    rss_from_status(&status)
}

fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// utime + stime of this process in clock ticks (USER_HZ), from /proc/self/stat.
pub fn cpu_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    ticks_from_stat(&stat)
}

fn ticks_from_stat(stat: &str) -> Option<u64> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11)?
        .parse::<u64>()
        .ok()?
        .checked_add(f.get(12)?.parse::<u64>().ok()?)
}

/// The memory limit that applies: the cgroup v2 limit when one is set, else the machine's memory.
pub fn memory_limit() -> Option<u64> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| {
        let path = c
            .lines()
            .find_map(|l| l.strip_prefix("0::"))?
            .trim()
            .to_string();
        let max = fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).ok()?;
        max.trim().parse::<u64>().ok()
    });
    cgroup.or_else(|| {
        let info = fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_formats() {
        let status = "Name:\tveil\nVmPeak:\t   10 kB\nVmRSS:\t    2048 kB\nThreads:\t5\n";
        assert_eq!(rss_from_status(status), Some(2048 * 1024));
        assert_eq!(rss_from_status("Name:\tveil\n"), None);
        // The command name may hold spaces and parentheses; fields 14 and 15 are utime, stime.
        let stat = "42 (veil (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 6 0 1";
        assert_eq!(ticks_from_stat(stat), Some(12));
        assert_eq!(ticks_from_stat("42 (veil) S 1"), None);
    }

    #[test]
    fn this_process_has_memory_and_a_limit() {
        let rss = rss_bytes().expect("/proc/self/status has VmRSS");
        assert!(rss > 0);
        assert!(memory_limit().is_some_and(|l| l > 0));
        assert!(cpu_ticks().is_some());
    }
}
