//! Graceful degradation, sans-IO: CPU and memory samples in, a load level out.
//!
//! A metric at or above its threshold puts the target level at Light; each
//! further step raises it one level, a step being 5 points or a quarter of the
//! distance from the threshold to 100 %, whichever is smaller (threshold 80:
//! Light from 80, Moderate from 85, Severe from 90, Critical from 95). The
//! level rises one step when the target has been above it for
//! `escalation_delay`, and falls one step when even the metric plus a
//! hysteresis margin (at most half the threshold) has been below the current
//! level for `recovery_delay`.

use std::time::{Duration, Instant};

use veil_dataplane::priority::Degradation;

/// The `[degradation]` config section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DegradationPolicy {
    /// Run the controller at all (true).
    pub enabled: bool,
    /// CPU use of the process, percent of the CPUs it may use (80).
    pub cpu_threshold_pct: f64,
    /// Memory in use, percent of the limit that applies (85).
    pub memory_threshold_pct: f64,
    /// Time above before each step up (5 s).
    pub escalation_delay: Duration,
    /// Time below (with the margin) before each step down (10 s).
    pub recovery_delay: Duration,
    /// Hysteresis margin in percentage points (5).
    pub hysteresis_pct: f64,
}

impl Default for DegradationPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            cpu_threshold_pct: 80.0,
            memory_threshold_pct: 85.0,
            escalation_delay: Duration::from_secs(5),
            recovery_delay: Duration::from_secs(10),
            hysteresis_pct: 5.0,
        }
    }
}

/// One reading of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSample {
    /// CPU use of the process, percent of the CPUs it may use.
    pub cpu_pct: f64,
    /// Memory in use, percent of the applicable limit.
    pub memory_pct: f64,
}

fn level_for(value: f64, threshold: f64) -> Degradation {
    if value < threshold {
        return Degradation::Normal;
    }
    let step = ((100.0 - threshold) / 4.0).clamp(f64::EPSILON, 5.0);
    match ((value - threshold) / step) as u32 {
        0 => Degradation::Light,
        1 => Degradation::Moderate,
        2 => Degradation::Severe,
        _ => Degradation::Critical,
    }
}

/// The controller. Feed it [`LoadSample`]s (once a second) with [`DegradationController::sample`].
#[derive(Debug, Clone)]
pub struct DegradationController {
    policy: DegradationPolicy,
    level: Degradation,
    above_since: Option<Instant>,
    below_since: Option<Instant>,
    last: LoadSample,
}

impl DegradationController {
    /// At Normal.
    pub fn new(policy: DegradationPolicy) -> Self {
        Self {
            policy,
            level: Degradation::Normal,
            above_since: None,
            below_since: None,
            last: LoadSample::default(),
        }
    }

    /// The current level.
    pub fn level(&self) -> Degradation {
        self.level
    }

    /// The last sample.
    pub fn last_sample(&self) -> LoadSample {
        self.last
    }

    fn target(&self, s: LoadSample, margin: f64) -> Degradation {
        let p = &self.policy;
        // The margin never exceeds half a threshold, so a low threshold can still be left.
        let cpu = level_for(
            s.cpu_pct + margin.min(p.cpu_threshold_pct / 2.0),
            p.cpu_threshold_pct,
        );
        let mem = level_for(
            s.memory_pct + margin.min(p.memory_threshold_pct / 2.0),
            p.memory_threshold_pct,
        );
        cpu.max(mem)
    }

    /// Take a sample at `now`; returns the new level if it changed.
    pub fn sample(&mut self, now: Instant, s: LoadSample) -> Option<Degradation> {
        self.last = s;
        if !self.policy.enabled {
            return None;
        }
        let before = self.level;
        if self.target(s, 0.0) > self.level {
            self.below_since = None;
            let since = *self.above_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.policy.escalation_delay {
                self.level = self.level.up();
                self.above_since = Some(now);
            }
        } else if self.target(s, self.policy.hysteresis_pct) < self.level {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.policy.recovery_delay {
                self.level = self.level.down();
                self.below_since = Some(now);
            }
        } else {
            self.above_since = None;
            self.below_since = None;
        }
        (self.level != before).then_some(self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(pct: f64) -> LoadSample {
        LoadSample {
            cpu_pct: pct,
            memory_pct: 10.0,
        }
    }

    #[test]
    fn thresholds_map_to_levels() {
        assert_eq!(level_for(79.9, 80.0), Degradation::Normal);
        assert_eq!(level_for(80.0, 80.0), Degradation::Light);
        assert_eq!(level_for(85.0, 80.0), Degradation::Moderate);
        assert_eq!(level_for(90.0, 80.0), Degradation::Severe);
        assert_eq!(level_for(95.0, 80.0), Degradation::Critical);
        assert_eq!(level_for(100.0, 80.0), Degradation::Critical);
        // Low thresholds step by 5 points.
        assert_eq!(level_for(6.0, 1.0), Degradation::Moderate);
        assert_eq!(level_for(11.0, 1.0), Degradation::Severe);
        assert_eq!(level_for(16.0, 1.0), Degradation::Critical);
    }

    #[test]
    fn rises_with_escalation_delay_one_step_at_a_time() {
        let t0 = Instant::now();
        let mut c = DegradationController::new(DegradationPolicy::default());
        let mut changes = vec![];
        for s in 0..30u64 {
            if let Some(l) = c.sample(t0 + Duration::from_secs(s), cpu(99.0)) {
                changes.push((s, l));
            }
        }
        assert_eq!(
            changes,
            vec![
                (5, Degradation::Light),
                (10, Degradation::Moderate),
                (15, Degradation::Severe),
                (20, Degradation::Critical)
            ]
        );
    }

    #[test]
    fn falls_with_recovery_delay_and_hysteresis() {
        let t0 = Instant::now();
        let mut c = DegradationController::new(DegradationPolicy::default());
        for s in 0..=5u64 {
            c.sample(t0 + Duration::from_secs(s), cpu(82.0));
        }
        assert_eq!(c.level(), Degradation::Light);
        // 77 % is below 80 but not by the 5-point margin: stays Light.
        for s in 6..40u64 {
            assert_eq!(c.sample(t0 + Duration::from_secs(s), cpu(77.0)), None);
        }
        // 70 % is: recovers after the 10 s delay.
        let mut fell = None;
        for s in 40..60u64 {
            if let Some(l) = c.sample(t0 + Duration::from_secs(s), cpu(70.0)) {
                fell = Some((s, l));
                break;
            }
        }
        assert_eq!(fell, Some((50, Degradation::Normal)));
    }

    #[test]
    fn brief_spikes_do_not_escalate() {
        let t0 = Instant::now();
        let mut c = DegradationController::new(DegradationPolicy::default());
        for s in 0..60u64 {
            let load = if s % 4 == 0 { 99.0 } else { 10.0 };
            assert_eq!(c.sample(t0 + Duration::from_secs(s), cpu(load)), None);
        }
    }

    #[test]
    fn memory_counts_too_and_disabled_does_nothing() {
        let t0 = Instant::now();
        let mut c = DegradationController::new(DegradationPolicy::default());
        let mem = LoadSample {
            cpu_pct: 0.0,
            memory_pct: 99.0,
        };
        c.sample(t0, mem);
        assert_eq!(
            c.sample(t0 + Duration::from_secs(5), mem),
            Some(Degradation::Light)
        );
        let mut off = DegradationController::new(DegradationPolicy {
            enabled: false,
            ..DegradationPolicy::default()
        });
        for s in 0..30u64 {
            assert_eq!(off.sample(t0 + Duration::from_secs(s), mem), None);
        }
    }
}
