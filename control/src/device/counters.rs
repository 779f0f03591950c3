//! The control thread's counters.

veil_dataplane::counter_set!(
    /// Counters of the control thread.
    ControlCounters {
        /// Initiations we sent.
        handshake_initiations_sent,
        /// Initiations we answered with a response.
        handshake_responses_sent,
        /// Handshakes completed as initiator.
        handshakes_completed_initiator,
        /// Handshakes completed as responder.
        handshakes_completed_responder,
        /// Cookie replies sent (under load).
        cookie_replies_sent,
        /// Cookie replies received and accepted.
        cookie_replies_received,
        /// Handshake messages with a bad MAC1.
        handshake_bad_mac,
        /// Handshake messages that failed to decrypt or verify.
        handshake_bad_crypto,
        /// Initiations from a static key not in the peer table.
        handshake_unknown_peer,
        /// Initiations with a timestamp not newer than the last one (replays).
        handshake_replayed,
        /// Initiations arriving faster than a peer may send them.
        handshake_too_fast,
        /// Responses or cookie replies for no pending handshake.
        handshake_unexpected,
        /// Handshake attempts given up after REKEY_ATTEMPT_TIME.
        handshake_gave_up,
        /// Migrations (source address changes) accepted.
        migrations_accepted,
        /// Migrations refused by policy.
        migrations_refused,
        /// Migration tokens granted.
        migration_tokens_granted,
        /// Sessions established (first handshake of a session; rekeys do not count).
        sessions_created,
        /// Sessions ended by a timeout (idle, dead peer, absolute) or drained.
        sessions_expired,
        /// Sessions ended by force (operator, the peer's goodbye).
        sessions_terminated,
        /// Sessions moved to Draining at shutdown.
        sessions_draining,
        /// Idle warnings sent to veil peers.
        idle_warnings_sent,
        /// Liveness probes sent.
        probes_sent,
        /// Initiations refused because the gateway is draining.
        handshake_refused_draining,
        /// Reconnect attempts after a drain notice.
        reconnect_attempts,
        /// Initiations dropped by the per-source rate limit (under load).
        handshake_rate_limited,
        /// New sessions refused by the reconnect limit.
        reconnects_refused,
        /// New sessions refused by degradation (Severe and up) or the Critical session cap.
        sessions_refused_degraded,
        /// Current degradation level, 0 (normal) to 4 (critical): a gauge.
        degradation_level,
        /// Degradation level changes.
        degradation_changes,
        /// Keepalives requested by the timers.
        keepalives_requested,
        /// Commands for the dataplane dropped because the device's queue was full.
        commands_dropped,
        /// Handshake messages to send dropped because the device's queue was full.
        transmits_dropped,
        /// Circuit breakers opened: a handshake round gave up, or a half-open trial went
        /// unanswered.
        breaker_opened,
        /// Handshakes not started because the peer's circuit breaker was open.
        handshakes_held_by_breaker,
        /// Handshake messages under load with a valid MAC1 and no MAC2, beyond the cookie
        /// replies one source may get: dropped before any further work.
        cookie_replies_limited,
        /// Control frames of a kind the sender's role may not send us (a client's drain
        /// notice, a gateway's token request, ...): ignored.
        frames_wrong_role,
        /// Handshake messages (valid MAC1 and MAC2) dropped because the handshake work budget
        /// was spent (under load): they would have cost Diffie-Hellman work.
        handshake_over_budget,
        /// Times the spent handshake work budget put the device under load.
        handshake_budget_exhausted,
        /// Admin requests (UAPI, `veil show`, the metrics' peer list) refused as busy: the
        /// control thread had `ADMIN_QUEUE` requests waiting already.
        admin_refused_busy,
            }
);
