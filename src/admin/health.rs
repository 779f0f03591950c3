//! Health of a running interface, component by component: `veil health IFACE` and
//! `GET /healthz`.
//!
//! | component | ok | degraded | failed |
//! |---|---|---|---|
//! | `udp_socket` | bound | | no address |
//! | `tun_device` | exists and up | | down or gone |
//! | `crypto_self_test` | known-answer seal/open passes | | it does not |
//! | `control_thread` | answers, heartbeat fresh | heartbeat stale | no answer in time |
//! | each dataplane thread | heartbeat ≤ [`FRESH`] old | ≤ [`STALLED`] old | older, or never |
//! | `degradation` | normal or light | moderate or severe | critical |
//!
//! Idle threads beat at least every `IDLE_WAIT` (0.5 s), so a heartbeat older than a few
//! seconds means the thread is stuck. The report's status is the worst component's; the
//! command exits 0 only when it is `ok`.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use veil_dataplane::role::Role;
use veil_dataplane::sys::Netlink;
use veil_dataplane::Keypair;

use super::context::Context;
use super::metrics::json_str;

/// A heartbeat at most this old is healthy.
pub const FRESH: Duration = Duration::from_secs(2);
/// A heartbeat older than this means the thread is stalled.
pub const STALLED: Duration = Duration::from_secs(5);
/// How long the control thread gets to answer.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A component's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Working.
    Ok,
    /// Working, but something is off.
    Degraded,
    /// Not working.
    Failed,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Failed => "failed",
        }
    }

    /// Exit status of `veil health`: 0 ok, 1 degraded, 2 failed.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Failed => 2,
        }
    }
}

/// One component's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// Component name.
    pub component: String,
    /// Its state.
    pub status: Status,
    /// For people.
    pub detail: String,
}

/// Every component's result.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Interface name.
    pub interface: String,
    /// Results, in a fixed order.
    pub checks: Vec<Check>,
}

impl HealthReport {
    /// The worst component's status.
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// A table for people; the first line names the components that are not ok.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let bad: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.status != Status::Ok)
            .map(|c| format!("{} {}", c.component, c.status.as_str()))
            .collect();
        let _ = write!(out, "{}: {}", self.interface, self.status().as_str());
        if !bad.is_empty() {
            let _ = write!(out, " ({})", bad.join(", "));
        }
        out.push('\n');
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {:<18} {:<9} {}",
                c.component,
                c.status.as_str(),
                c.detail
            );
        }
        out
    }

    /// JSON: `{"interface", "status", "components": [{"name", "status", "detail"}]}`.
    pub fn to_json(&self) -> String {
        let comps: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{{\"name\":{},\"status\":{},\"detail\":{}}}",
                    json_str(&c.component),
                    json_str(c.status.as_str()),
                    json_str(&c.detail)
                )
            })
            .collect();
        format!(
            "{{\"interface\":{},\"status\":{},\"components\":[{}]}}",
            json_str(&self.interface),
            json_str(self.status().as_str()),
            comps.join(",")
        )
    }
}

const SELF_TEST_SEND: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
const SELF_TEST_RECV: [u8; 32] = [7; 32];
const SELF_TEST_PLAINTEXT: &[u8; 16] = b"veil self-test!\n";
/// The transport message WireGuard makes of the plaintext above with key 0..32, receiver index
/// 2 and counter 0 (computed independently with Python's `cryptography` ChaCha20Poly1305).
const SELF_TEST_MESSAGE: [u8; 48] = [
    0x04, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x6e, 0xdd, 0x2b, 0x5d, 0x8d, 0x95, 0xc3, 0xbd, 0x75, 0x4c, 0x28, 0x04, 0xdc, 0x37, 0x6f, 0x2d,
    0x37, 0xaf, 0x20, 0x12, 0x92, 0x4d, 0xb1, 0x7d, 0xbb, 0x79, 0x7b, 0xc7, 0xf7, 0x4e, 0x06, 0x10,
];

/// Seal a known plaintext through [`Keypair`], compare with the known message, open it with
/// the peer's keypair, and check that a flipped bit is refused.
pub fn crypto_self_test() -> Result<(), &'static str> {
    let now = Instant::now();
    let sender: Keypair = Keypair::new(&SELF_TEST_SEND, &SELF_TEST_RECV, 1, 2, now, true);
    let receiver: Keypair = Keypair::new(&SELF_TEST_RECV, &SELF_TEST_SEND, 2, 1, now, false);
    let mut buf = [0u8; 48];
    buf[16..32].copy_from_slice(SELF_TEST_PLAINTEXT);
    let len = sender
        .seal(&mut buf, SELF_TEST_PLAINTEXT.len())
        .map_err(|_| "seal failed")?;
    if buf.get(..len) != Some(&SELF_TEST_MESSAGE[..]) {
        return Err("sealed message differs from the known answer");
    }
    let mut tampered = SELF_TEST_MESSAGE;
    tampered[20] ^= 1;
    if receiver.open(&mut tampered).is_ok() {
        return Err("a tampered message was accepted");
    }
    let (n, counter) = receiver.open(&mut buf).map_err(|_| "open failed")?;
    if counter != 0 || buf.get(16..16 + n) != Some(&SELF_TEST_PLAINTEXT[..]) {
        return Err("opened plaintext differs");
    }
    Ok(())
}

fn heartbeat(age: Option<Duration>) -> (Status, String) {
    match age {
        None => (Status::Failed, "has not run yet".into()),
        Some(a) if a <= FRESH => (
            Status::Ok,
            format!("heartbeat {:.1} s ago", a.as_secs_f64()),
        ),
        Some(a) if a <= STALLED => (
            Status::Degraded,
            format!("heartbeat {:.1} s ago (slow)", a.as_secs_f64()),
        ),
        Some(a) => (
            Status::Failed,
            format!("no heartbeat for {:.1} s (stalled)", a.as_secs_f64()),
        ),
    }
}

/// The graceful-degradation level: Normal and Light are ok (Light only stretches timers),
/// Moderate and Severe degraded (traffic shed, sessions refused), Critical failed.
fn degradation(level: u64) -> (Status, String) {
    let name = veil_dataplane::priority::Degradation::ALL
        .get(usize::try_from(level).unwrap_or(usize::MAX))
        .map_or("unknown", |l| l.as_str());
    let status = match level {
        0 | 1 => Status::Ok,
        2 | 3 => Status::Degraded,
        _ => Status::Failed,
    };
    (status, format!("level {name}"))
}

/// Check every component of the running interface.
pub fn check(ctx: &Context) -> HealthReport {
    let mut checks = Vec::new();
    let mut add = |component: &str, (status, detail): (Status, String)| {
        checks.push(Check {
            component: component.to_string(),
            status,
            detail,
        });
    };
    add(
        "udp_socket",
        match ctx.udp.current().local_addr() {
            Ok(a) => (Status::Ok, format!("listening on UDP port {}", a.port())),
            Err(e) => (Status::Failed, format!("no local address: {e}")),
        },
    );
    add(
        "tun_device",
        match Netlink::new().and_then(|nl| nl.link(ctx.tun_ifindex)) {
            Ok(l) if l.up => (Status::Ok, format!("{} up, MTU {}", l.name, l.mtu)),
            Ok(l) => (Status::Failed, format!("{} is down", l.name)),
            Err(e) => (Status::Failed, format!("interface unavailable: {e}")),
        },
    );
    add(
        "crypto_self_test",
        match crypto_self_test() {
            Ok(()) => (Status::Ok, "ChaCha20-Poly1305 known answer passed".into()),
            Err(why) => (Status::Failed, why.into()),
        },
    );
    let control = match ctx
        .admin
        .snapshot(false, SystemTime::now(), CONTROL_TIMEOUT)
    {
        Ok(_) => heartbeat(ctx.heartbeat_age(Role::Control)),
        Err(e) => (Status::Failed, format!("does not answer: {e}")),
    };
    add("control_thread", control);
    // Every pipeline's threads (`veil-rx`, `veil-rx1`, …): a stalled one fails and names
    // itself.
    for (thread, age) in ctx.dataplane_heartbeats() {
        add(&thread, heartbeat(age));
    }
    add(
        "degradation",
        degradation(
            ctx.control_counters
                .degradation_level
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    );
    HealthReport {
        interface: ctx.name.clone(),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_passes() {
        assert_eq!(crypto_self_test(), Ok(()));
    }

    #[test]
    fn heartbeat_thresholds() {
        assert_eq!(heartbeat(Some(Duration::from_millis(400))).0, Status::Ok);
        assert_eq!(heartbeat(Some(Duration::from_secs(3))).0, Status::Degraded);
        assert_eq!(heartbeat(Some(Duration::from_secs(60))).0, Status::Failed);
        assert_eq!(heartbeat(None).0, Status::Failed);
    }

    #[test]
    fn report_names_what_is_wrong() {
        let r = HealthReport {
            interface: "veil0".into(),
            checks: vec![
                Check {
                    component: "udp_socket".into(),
                    status: Status::Ok,
                    detail: "x".into(),
                },
                Check {
                    component: "veil-tx".into(),
                    status: Status::Failed,
                    detail: "stalled".into(),
                },
            ],
        };
        assert_eq!(r.status(), Status::Failed);
        assert!(r.to_text().starts_with("veil0: failed (veil-tx failed)\n"));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["components"][1]["name"], "veil-tx");
    }
}
