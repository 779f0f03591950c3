//! One control thread, N pipelines: what each pipeline's crypto stage receives of a command.
//!
//! Every pipeline's crypto stage holds its own copy of the per-peer table (routes, endpoint,
//! keypair slots), so a command that changes a peer goes to every pipeline's command ring, in
//! the same order. What must exist once is shared instead of copied: the keypair (its send
//! counter and replay window, see [`Keypair`]) and a peer's rate-limit buckets. What must
//! happen once goes to one pipeline only (keepalives, frames, a goodbye). Removal and cleared
//! sessions take effect before any ring is read: [`Fanout`] revokes the peer's keypairs as it
//! splits the command, and every pipeline checks that flag before it opens or seals.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::crypto::Keypair;
use crate::link::{Command, Event, PeerId};
use crate::ratelimit::PeerLimits;

/// Most keypairs of one peer a pipeline can hold (current, previous, next).
const HELD: usize = 3;

/// What the control thread remembers of a peer to split its commands.
#[derive(Debug, Default)]
struct PeerView {
    /// The last keypairs installed: a superset of what any pipeline holds.
    keypairs: VecDeque<Arc<Keypair>>,
    /// `Command::SetRoaming`: does a new source address wait for the control thread?
    validated: bool,
}

/// Splits commands over `pipelines` pipelines. See the module docs.
#[derive(Debug)]
pub struct Fanout {
    pipelines: usize,
    peers: HashMap<PeerId, PeerView>,
}

impl Fanout {
    /// For `pipelines` pipelines (at least one).
    pub fn new(pipelines: usize) -> Self {
        Self {
            pipelines: pipelines.max(1),
            peers: HashMap::new(),
        }
    }

    /// How many pipelines commands are split over.
    pub fn pipelines(&self) -> usize {
        self.pipelines
    }

    /// One more pipeline.
    pub fn grow(&mut self) {
        self.pipelines += 1;
    }

    fn revoke(&mut self, peer: PeerId) {
        if let Some(v) = self.peers.get_mut(&peer) {
            for kp in v.keypairs.drain(..) {
                kp.revoke();
            }
        }
    }

    /// The copy of `cmd` for each pipeline, in pipeline order (`None`: that pipeline gets
    /// nothing).
    pub fn split(&mut self, cmd: Command) -> Vec<Option<Command>> {
        let n = self.pipelines;
        let mut first_only = false;
        let cmd = match cmd {
            Command::AddPeer { peer, .. } => {
                self.revoke(peer);
                self.peers.insert(peer, PeerView::default());
                cmd
            }
            Command::RemovePeer { peer } => {
                self.revoke(peer);
                self.peers.remove(&peer);
                cmd
            }
            Command::InstallKeypair {
                peer, ref keypair, ..
            } => {
                let v = self.peers.entry(peer).or_default();
                v.keypairs.push_back(keypair.clone());
                while v.keypairs.len() > HELD {
                    v.keypairs.pop_front();
                }
                cmd
            }
            Command::SetRoaming { peer, validated } => {
                self.peers.entry(peer).or_default().validated = validated;
                cmd
            }
            // The first pipeline seals the goodbye (it may, with a revoked keypair).
            Command::ClearKeypairs { peer, .. } => {
                self.revoke(peer);
                cmd
            }
            // One set of buckets for every pipeline.
            Command::SetRateLimit { peer, limit } => Command::ShareRateLimit {
                peer,
                limits: PeerLimits::new(limit),
            },
            // Each pipeline holds its share of a session's limit.
            Command::SetSessionMemory { bytes } => Command::SetSessionMemory {
                bytes: bytes.map(|b| b / n.max(1)),
            },
            Command::SendKeepalive { .. } | Command::SendFrame { .. } => {
                first_only = true;
                cmd
            }
            _ => cmd,
        };
        let copy = |_| {
            (!first_only).then(|| match &cmd {
                Command::InstallKeypair {
                    peer,
                    keypair,
                    role,
                    ..
                } => Command::InstallKeypair {
                    peer: *peer,
                    keypair: keypair.clone(),
                    role: *role,
                    announce: false,
                },
                Command::ClearKeypairs { peer, .. } => Command::ClearKeypairs {
                    peer: *peer,
                    goodbye: None,
                },
                other => other.clone(),
            })
        };
        let rest: Vec<Option<Command>> = (1..n).map(copy).collect();
        std::iter::once(Some(cmd)).chain(rest).collect()
    }

    /// An event from pipeline `from`: the command the other pipelines need because of it.
    /// A standard peer's endpoint moved on that pipeline at once (WireGuard's roaming); the
    /// others follow. A validated peer's move waits for the control thread's answer, which
    /// reaches every pipeline anyway.
    pub fn follow(&self, ev: &Event) -> Option<Command> {
        match ev {
            Event::EndpointChanged { peer, addr, local }
                if self.peers.get(peer).is_some_and(|v| !v.validated) =>
            {
                Some(Command::SetEndpoint {
                    peer: *peer,
                    endpoint: *addr,
                    local: *local,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn keypair() -> Arc<Keypair> {
        Arc::new(Keypair::new(&[1; 32], &[2; 32], 7, 9, Instant::now(), true))
    }

    #[test]
    fn once_only_commands_go_to_the_first_pipeline() {
        let mut f = Fanout::new(3);
        let split = f.split(Command::SendKeepalive { peer: PeerId(1) });
        assert!(split[0].is_some() && split[1].is_none() && split[2].is_none());
        let split = f.split(Command::ClearKeypairs {
            peer: PeerId(1),
            goodbye: Some(2),
        });
        assert!(matches!(
            split[0],
            Some(Command::ClearKeypairs {
                goodbye: Some(2),
                ..
            })
        ));
        assert!(matches!(
            split[2],
            Some(Command::ClearKeypairs { goodbye: None, .. })
        ));
    }

    #[test]
    fn every_pipeline_shares_one_keypair_and_one_limiter() {
        let mut f = Fanout::new(2);
        let kp = keypair();
        let split = f.split(Command::InstallKeypair {
            peer: PeerId(0),
            keypair: kp.clone(),
            role: crate::link::KeypairRole::Initiator,
            announce: true,
        });
        let got: Vec<(Arc<Keypair>, bool)> = split
            .into_iter()
            .map(|c| match c {
                Some(Command::InstallKeypair {
                    keypair, announce, ..
                }) => (keypair, announce),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(got.iter().all(|(k, _)| Arc::ptr_eq(k, &kp)));
        assert_eq!(
            got.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
            [true, false]
        );
        let limit = crate::ratelimit::RateLimit {
            bytes_per_sec: 1000,
            ..crate::ratelimit::RateLimit::UNLIMITED
        };
        let split = f.split(Command::SetRateLimit {
            peer: PeerId(0),
            limit,
        });
        let limits: Vec<Arc<PeerLimits>> = split
            .into_iter()
            .map(|c| match c {
                Some(Command::ShareRateLimit {
                    limits: Some(l), ..
                }) => l,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(Arc::ptr_eq(&limits[0], &limits[1]));
        // Each pipeline holds its share of a session's memory limit.
        let shares = f.split(Command::SetSessionMemory { bytes: Some(1000) });
        for share in shares {
            assert!(
                matches!(share, Some(Command::SetSessionMemory { bytes: Some(500) })),
                "{share:?}"
            );
        }
    }

    #[test]
    fn removal_and_clearing_revoke_before_any_pipeline_applies_them() {
        let mut f = Fanout::new(2);
        let (a, b) = (keypair(), keypair());
        for kp in [&a, &b] {
            f.split(Command::InstallKeypair {
                peer: PeerId(4),
                keypair: (*kp).clone(),
                role: crate::link::KeypairRole::Responder,
                announce: true,
            });
        }
        f.split(Command::ClearKeypairs {
            peer: PeerId(4),
            goodbye: None,
        });
        assert!(a.revoked() && b.revoked());
        let c = keypair();
        f.split(Command::InstallKeypair {
            peer: PeerId(4),
            keypair: c.clone(),
            role: crate::link::KeypairRole::Initiator,
            announce: true,
        });
        assert!(!c.revoked());
        f.split(Command::RemovePeer { peer: PeerId(4) });
        assert!(c.revoked());
    }

    #[test]
    fn a_standard_peer_roams_on_every_pipeline() {
        let mut f = Fanout::new(2);
        let addr: std::net::SocketAddr = "192.0.2.1:51820".parse().expect("addr");
        f.split(Command::SetRoaming {
            peer: PeerId(0),
            validated: false,
        });
        f.split(Command::SetRoaming {
            peer: PeerId(1),
            validated: true,
        });
        let local = Some(crate::batch::LocalAddr {
            ip: "198.51.100.2".parse().expect("ip"),
            ifindex: 0,
        });
        let moved = |p| Event::EndpointChanged {
            peer: p,
            addr,
            local,
        };
        assert!(matches!(
            f.follow(&moved(PeerId(0))),
            Some(Command::SetEndpoint { endpoint, local: l, .. }) if endpoint == addr && l == local
        ));
        assert!(f.follow(&moved(PeerId(1))).is_none());
    }
}
