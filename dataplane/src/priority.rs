//! Traffic priority and load shedding.
//!
//! Inner packets are classed by their DSCP: by default EF and CS5–CS7 are
//! High, CS1 is Low, everything else Normal; keepalives, handshakes and veil
//! control frames are Critical and never dropped by policy. Under ring
//! pressure (the RX → crypto ring above its high-water mark) or at degradation
//! Moderate and above, Low is dropped first; Normal is dropped when pressure
//! is severe (halfway between the high-water mark and full) or, at
//! degradation Critical, as soon as the high-water mark is passed. High is
//! never dropped by policy.

use std::fmt;

/// Priority class of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Background traffic: dropped first.
    Low,
    /// Everything not marked otherwise.
    Normal,
    /// Latency-sensitive traffic (voice, network control).
    High,
    /// Handshakes, keepalives and control frames: never dropped by policy.
    Critical,
}

impl Priority {
    /// Lower-case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// DSCP code points with names.
pub mod dscp {
    /// Class selector 1 (lower effort).
    pub const CS1: u8 = 8;
    /// Class selector 5.
    pub const CS5: u8 = 40;
    /// Expedited forwarding.
    pub const EF: u8 = 46;
    /// Class selector 6 (network control).
    pub const CS6: u8 = 48;
    /// Class selector 7.
    pub const CS7: u8 = 56;
}

/// DSCP → priority class.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PriorityMap {
    class: [Priority; 64],
}

impl fmt::Debug for PriorityMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let of = |p| {
            (0..64u8)
                .filter(|d| self.class[usize::from(*d)] == p)
                .collect::<Vec<_>>()
        };
        f.debug_struct("PriorityMap")
            .field("high", &of(Priority::High))
            .field("low", &of(Priority::Low))
            .finish()
    }
}

impl Default for PriorityMap {
    fn default() -> Self {
        Self::new(&[dscp::EF, dscp::CS5, dscp::CS6, dscp::CS7], &[dscp::CS1])
    }
}

impl PriorityMap {
    /// `high` and `low` code points (0..=63; others ignored), the rest Normal.
    pub fn new(high: &[u8], low: &[u8]) -> Self {
        let mut class = [Priority::Normal; 64];
        for &d in high {
            if let Some(c) = class.get_mut(usize::from(d)) {
                *c = Priority::High;
            }
        }
        for &d in low {
            if let Some(c) = class.get_mut(usize::from(d)) {
                *c = Priority::Low;
            }
        }
        Self { class }
    }

    /// Class of a packet with this DSCP.
    #[inline]
    pub fn class(&self, dscp: u8) -> Priority {
        self.class
            .get(usize::from(dscp & 0x3F))
            .copied()
            .unwrap_or(Priority::Normal)
    }
}

/// Load levels of the graceful-degradation controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Degradation {
    /// Full operation.
    #[default]
    Normal,
    /// Longer keepalive intervals, fewer timer wake-ups.
    Light,
    /// Low-priority traffic dropped, handshake rate halved.
    Moderate,
    /// New sessions refused; existing ones continue.
    Severe,
    /// Hard caps on sessions and in-flight packets; Normal shed under pressure.
    Critical,
}

impl Degradation {
    /// All levels, lowest first.
    pub const ALL: [Degradation; 5] = [
        Degradation::Normal,
        Degradation::Light,
        Degradation::Moderate,
        Degradation::Severe,
        Degradation::Critical,
    ];

    /// 0 (Normal) to 4 (Critical), for the gauge.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Degradation::Normal => "normal",
            Degradation::Light => "light",
            Degradation::Moderate => "moderate",
            Degradation::Severe => "severe",
            Degradation::Critical => "critical",
        }
    }

    /// One level up (Critical stays).
    pub fn up(self) -> Self {
        Self::ALL
            .get(self.as_u8() as usize + 1)
            .copied()
            .unwrap_or(self)
    }

    /// One level down (Normal stays).
    pub fn down(self) -> Self {
        (self.as_u8() as usize)
            .checked_sub(1)
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(self)
    }
}

/// Which classes to drop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shedding {
    /// Drop Low.
    pub low: bool,
    /// Drop Normal (and Low).
    pub normal: bool,
}

impl Shedding {
    /// Decide from the ring occupancy (percent), the high-water mark (percent) and the level.
    pub fn decide(occupancy_pct: u32, high_water_pct: u32, level: Degradation) -> Self {
        let pressure = occupancy_pct > high_water_pct;
        let severe_pressure = occupancy_pct > (high_water_pct + 100) / 2;
        let low = pressure || level >= Degradation::Moderate;
        let normal = severe_pressure || (pressure && level >= Degradation::Critical);
        Shedding {
            low: low || normal,
            normal,
        }
    }

    /// Is a packet of class `p` dropped?
    #[inline]
    pub fn drops(&self, p: Priority) -> bool {
        match p {
            Priority::Low => self.low,
            Priority::Normal => self.normal,
            Priority::High | Priority::Critical => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes() {
        let m = PriorityMap::default();
        assert_eq!(m.class(dscp::EF), Priority::High);
        assert_eq!(m.class(dscp::CS7), Priority::High);
        assert_eq!(m.class(dscp::CS1), Priority::Low);
        assert_eq!(m.class(0), Priority::Normal);
        assert_eq!(m.class(26), Priority::Normal);
    }

    #[test]
    fn shedding_order() {
        let s = Shedding::decide(10, 75, Degradation::Normal);
        assert!(!s.drops(Priority::Low));
        let s = Shedding::decide(80, 75, Degradation::Normal);
        assert!(s.drops(Priority::Low) && !s.drops(Priority::Normal));
        let s = Shedding::decide(90, 75, Degradation::Normal);
        assert!(s.drops(Priority::Normal) && !s.drops(Priority::High));
        let s = Shedding::decide(0, 75, Degradation::Moderate);
        assert!(s.drops(Priority::Low) && !s.drops(Priority::Normal));
        let s = Shedding::decide(80, 75, Degradation::Critical);
        assert!(s.drops(Priority::Normal));
        assert!(!Shedding::decide(100, 0, Degradation::Critical).drops(Priority::Critical));
    }

    #[test]
    fn levels_step() {
        assert_eq!(Degradation::Normal.up(), Degradation::Light);
        assert_eq!(Degradation::Critical.up(), Degradation::Critical);
        assert_eq!(Degradation::Normal.down(), Degradation::Normal);
        assert_eq!(Degradation::Severe.down(), Degradation::Moderate);
    }
}
