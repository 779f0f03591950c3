//! CPU sets, pinning and thread ids for the pipeline threads.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::OnceLock;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::{getpid, Pid};

/// The CPUs this process may run on, ascending.
///
/// Read once, from the main thread's affinity (the thread-group leader,
/// whose id is the pid) rather than the caller's, and remembered: threads
/// that pin themselves, the main thread included, do not shrink the set
/// later callers see. That is the set `taskset` or a cgroup `cpuset` gave
/// veil at start; a later `taskset -p` needs a restart to be seen.
pub fn available_cpus() -> Vec<usize> {
    static PROCESS_CPUS: OnceLock<Vec<usize>> = OnceLock::new();
    if let Some(cpus) = PROCESS_CPUS.get() {
        return cpus.clone();
    }
    let set = sched_getaffinity(getpid())
        // The leader can be gone (it exited with other threads still
        // running); fall back to the caller's own mask.
        .or_else(|_| sched_getaffinity(Pid::from_raw(0)));
    let cpus: Vec<usize> = match set {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => return Vec::new(),
    };
    PROCESS_CPUS.get_or_init(|| cpus).clone()
}

/// Pin the calling thread to `cpu` alone.
///
/// Fails with `InvalidInput` carrying a [`CpuNotAllowed`] when `cpu` is not
/// among [`available_cpus`], rather than the kernel's bare `EINVAL`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let allowed = available_cpus();
    if !allowed.contains(&cpu) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            CpuNotAllowed { cpu, allowed },
        ));
    }
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    // Pid 0: the calling thread, not the whole process.
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The kernel's id of the calling thread (`gettid`), as `top -H`, `perf`
/// and `taskset -p` show it.
pub fn current_tid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// [`pin_current_thread`] was asked for a CPU the process may not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuNotAllowed {
    /// The CPU asked for.
    pub cpu: usize,
    /// The CPUs the process may use.
    pub allowed: Vec<usize>,
}

impl fmt::Display for CpuNotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot pin to CPU {}: this process may only use CPUs {:?}",
            self.cpu, self.allowed
        )
    }
}

impl Error for CpuNotAllowed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_listed_and_pinnable() {
        let cpus = available_cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().expect("non-empty");
        std::thread::spawn(move || {
            pin_current_thread(last).expect("pin to an allowed cpu");
            let mine = sched_getaffinity(Pid::from_raw(0)).expect("own mask");
            let pinned: Vec<usize> = (0..CpuSet::count())
                .filter(|&c| mine.is_set(c).unwrap_or(false))
                .collect();
            assert_eq!(pinned, vec![last]);
            // The process-wide view is unchanged by pinning one thread.
            assert_eq!(available_cpus(), cpus);
        })
        .join()
        .expect("pinning thread");
    }

    #[test]
    fn pinning_outside_the_set_fails_clearly() {
        for cpu in [CpuSet::count(), usize::MAX] {
            let err = pin_current_thread(cpu).expect_err("not allowed");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let detail = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<CpuNotAllowed>())
                .expect("typed detail");
            assert_eq!(detail.cpu, cpu);
            assert!(err.to_string().contains("may only use CPUs"));
        }
    }

    #[test]
    fn tids_differ_per_thread() {
        let main = current_tid();
        let other = std::thread::spawn(current_tid).join().expect("thread");
        assert!(main > 0 && other > 0);
        assert_ne!(main, other);
    }
}
