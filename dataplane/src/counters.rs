//! Per-stage counters, each set on its own cache lines with a single writer.
//!
//! The owning thread adds with a relaxed load + store (no locked instruction:
//! there is one writer); any thread may read a consistent-enough snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Add `n` to a counter this thread alone writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Declare a struct of named `AtomicU64` counters on its own cache lines, with
/// a `snapshot()` listing `(name, value)` pairs.
#[macro_export]
macro_rules! counter_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[repr(align(128))]
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: ::std::sync::atomic::AtomicU64,)*
        }

        impl $name {
            /// Every counter as (name, value), in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(::std::sync::atomic::Ordering::Relaxed)),)*]
            }
        }
    };
}

crate::counter_set!(
    /// Counters of the RX stage.
    RxCounters {
        /// Datagrams received.
        udp_datagrams,
        /// Bytes of datagrams received.
        udp_bytes,
        /// Packets read from the TUN device (after splitting super-packets).
        tun_packets,
        /// Bytes read from the TUN device.
        tun_bytes,
        /// TUN reads (syscalls that returned a packet): segments per read = tun_packets / tun_reads.
        tun_reads,
        /// Super-packets read from the TUN device and split (TSO/USO).
        tun_super_packets,
        /// Packets from the TUN device whose offload header did not add up (dropped).
        drop_offload,
        /// Received datagrams the kernel had coalesced (UDP GRO): datagrams per GRO receive =
        /// udp_gro_datagrams / udp_gro_receives.
        udp_gro_receives,
        /// Datagrams in those.
        udp_gro_datagrams,
        /// Handshake messages handed to the control thread.
        handshake_queued,
        /// Handshake messages dropped because the control ring was full.
        drop_handshake_ring_full,
        /// Handshake messages dropped because their source spent its cookie-reply budget
        /// under load (the control thread's decision, taken in RX: see `source_filter`).
        drop_handshake_filtered,
        /// Datagrams that are no WireGuard message (bad type or length).
        drop_malformed,
        /// Datagrams larger than a buffer.
        drop_truncated,
        /// recvmmsg/read errors other than would-block.
        io_errors,
        /// Batches passed to the crypto stage.
        batches,
        /// Times RX had no free batch and waited for one.
        pool_empty,
        /// Pauses (with backoff) after a transient receive or read error.
        io_pauses,
        /// Rounds a source was left unread because its direction's bytes in flight reached
        /// the byte queue limit (the packets wait in the kernel's queue instead).
        bql_held,
        /// Rounds RX ran through the crypto (and TX) stage itself because their threads were
        /// parked and the batch was small (no hand-off).
        run_to_completion,
        /// Small packets that came alone and took the express lane past bulk batches.
        express_packets,
    }
);

crate::counter_set!(
    /// Counters of the crypto stage.
    CryptoCounters {
        /// Transport messages opened.
        decrypted,
        /// Transport messages sealed.
        encrypted,
        /// Keepalives received.
        keepalives_received,
        /// Keepalives sent.
        keepalives_sent,
        /// veil control frames received.
        frames_received,
        /// veil control frames sent.
        frames_sent,
        /// Peers this pipeline's crypto stage took on (`Command::AddPeer`).
        peers_added,
        /// Peers this pipeline's crypto stage forgot (`Command::RemovePeer`).
        peers_removed,
        /// Receiver index not known.
        drop_unknown_index,
        /// Tag did not verify.
        drop_auth,
        /// Counter replayed or too old.
        drop_replay,
        /// Keypair older than REJECT_AFTER_TIME or counter exhausted.
        drop_expired_key,
        /// Keypair revoked by the control side (session cleared, peer removed) and not yet
        /// forgotten by this pipeline: the packet is neither opened nor sealed.
        drop_revoked_key,
        /// Decrypted payload is neither IP, keepalive nor control frame.
        drop_invalid_inner,
        /// Control frames beyond a peer's frame rate, dropped before they were parsed.
        drop_frame_rate_limited,
        /// Inner source address outside the sending peer's AllowedIPs.
        drop_source_not_allowed,
        /// No peer's AllowedIPs contain the destination.
        drop_no_route,
        /// Peer has no known endpoint.
        drop_no_endpoint,
        /// Staged packet dropped because the staging queue was full (oldest first).
        drop_staged_overflow,
        /// Staged packets dropped when their peer was removed or its handshake gave up.
        drop_staged_expired,
        /// Packets staged while waiting for a handshake.
        staged,
        /// Events dropped because the ring to the control thread was full.
        drop_event_ring_full,
        /// Packets from a new source address of a peer whose roaming is validated (requests raised).
        roam_requests,
        /// Endpoint moves of standard peers (at once, on an authenticated packet from a new address).
        roamed,
        /// Data from a source address the control thread has not approved (migration pending or refused).
        drop_unapproved_source,
        /// Control frames with no session to send them in.
        drop_frame_no_session,
        /// Data packets over a client's rate limit (dropped).
        rate_limit_violations,
        /// Low-priority packets shed under pressure or degradation.
        drop_priority_low,
        /// Normal-priority packets shed under severe pressure or critical degradation.
        drop_priority_normal,
    }
);

crate::counter_set!(
    /// Counters of the TX stage.
    TxCounters {
        /// Datagrams sent.
        udp_datagrams,
        /// Bytes of datagrams sent.
        udp_bytes,
        /// Packets written to the TUN device (before coalescing).
        tun_packets,
        /// Bytes written to the TUN device.
        tun_bytes,
        /// TUN writes (syscalls): packets per write = tun_packets / tun_writes.
        tun_writes,
        /// Super-packets written to the TUN device (GRO on write).
        tun_super_packets,
        /// Handshake messages sent for the control thread.
        handshake_sent,
        /// Datagrams the kernel refused (unreachable, too big, …).
        udp_errors,
        /// TUN writes that failed.
        tun_errors,
        /// Times the socket was full and TX waited for room.
        udp_would_block,
        /// Retries after the kernel was short of buffers or memory (ENOBUFS, ENOMEM).
        udp_retries,
        /// Datagrams dropped because the kernel could not take them within the stall limit
        /// (`stage::tx::SEND_STALL_LIMIT`, 3 ms per batch; also counted in `udp_errors`).
        drop_send_stall,
        /// sendmmsg messages carrying several datagrams (UDP GSO): datagrams per GSO send =
        /// udp_gso_datagrams / udp_gso_sends.
        udp_gso_sends,
        /// Datagrams sent in GSO messages.
        udp_gso_datagrams,
        /// Times the kernel refused UDP GSO and it was turned off for the socket.
        udp_gso_disabled,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_and_snapshot() {
        let c = TxCounters::default();
        bump(&c.udp_datagrams, 3);
        bump(&c.udp_datagrams, 2);
        assert_eq!(c.snapshot()[0], ("udp_datagrams", 5));
        assert_eq!(std::mem::align_of::<TxCounters>(), 128);
    }
}
