//! The device's handshake messages: screening (MACs, cookies, per-source limits, the work
//! budget), initiations and responses, cookie replies, and completing a handshake.

use super::*;

impl<R: CryptoRngCore> Device<R> {
    /// Handshake messages that went on to Diffie-Hellman work so far: the control loop's
    /// shell times [`ControlDriver::on_handshake`] and, when this moved, charges the time to
    /// the budget with [`Device::charge_handshake_work`].
    pub fn handshake_work_done(&self) -> u64 {
        self.work_done
    }

    /// `spent` of handshake work was just done (on the message the control loop passed in
    /// last): it comes off the budget, which may go into debt and refills at
    /// [`HANDSHAKE_BUDGET_PER_SEC`] on the control loop's clock.
    pub fn charge_handshake_work(&mut self, spent: Duration) {
        self.refill_budget(self.last_now);
        self.work_budget.take(spent.as_secs_f64());
    }

    pub(super) fn refill_budget(&mut self, now: Instant) {
        // Only forward: the bucket must never be refilled twice for the same time.
        let now = now.max(self.last_now);
        self.work_budget.refill(
            now,
            HANDSHAKE_BUDGET_PER_SEC.as_secs_f64(),
            HANDSHAKE_BUDGET_BURST.as_secs_f64(),
        );
    }

    /// Is any handshake work budget left at `now`? When it is not, the device goes under
    /// load (for [`UNDER_LOAD_LINGER`]), so only initiations with a valid cookie may
    /// spend the budget as it refills.
    pub(super) fn work_budget_left(&mut self, now: Instant) -> bool {
        self.refill_budget(now);
        let left = self.work_budget.tokens() > 0.0;
        if !left {
            if !self.under_load(now) {
                bump(&self.counters.handshake_budget_exhausted, 1);
            }
            self.under_load_until = Some(now + UNDER_LOAD_LINGER);
        }
        left
    }

    /// The checks every handshake message (initiation or response) passes before any
    /// Diffie-Hellman work, in the kernel's order: MAC1, then (under load) MAC2 or a cookie
    /// reply, and only then the per-source limit, so a spoofed source cannot spend the budget
    /// of the address it claims.
    pub(super) fn screen_handshake(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        under_load: bool,
        now: Instant,
    ) -> Screened {
        if under_load && !self.flood_prefilter(src, now) {
            return Screened::Refused;
        }
        match self.cookies.check(msg, src, under_load, now) {
            Ok(()) if under_load && !self.admit_handshake(src, now) => Screened::Refused,
            Ok(()) => Screened::Pass,
            Err(HandshakeError::Mac2Required) if !self.admit_cookie_reply(src, now) => {
                Screened::Refused
            }
            Err(HandshakeError::Mac2Required) => Screened::CookieWanted,
            Err(e) => {
                self.count_error(e);
                // As the kernel's net_dbg_ratelimited: at debug level only, and the log
                // limiter bounds a flood of them.
                debug!("handshake message from {src} dropped: {e}");
                Screened::Refused
            }
        }
    }

    /// Screen a handshake message ([`Device::screen_handshake`]) with the work budget in
    /// mind (a spent budget puts the device under load before the checks): `None` when it is
    /// refused or would pass but the budget is spent (counted), else the verdict and whether
    /// the device is under load.
    pub(super) fn screen_with_budget(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
    ) -> Option<(Screened, bool)> {
        let budget = self.work_budget_left(now);
        let under_load = self.under_load(now);
        match self.screen_handshake(msg, src, under_load, now) {
            Screened::Refused => None,
            Screened::Pass if !budget => {
                bump(&self.counters.handshake_over_budget, 1);
                None
            }
            screened => Some((screened, under_load)),
        }
    }

    pub(super) fn send_cookie_reply(&mut self, reply: &[u8], src: SocketAddr) {
        bump(&self.counters.cookie_replies_sent, 1);
        if let Some(d) = HandshakeDatagram::new(reply, src, None) {
            self.transmits.push_back(d.with_local(self.arrived_on));
        }
    }

    pub(super) fn on_initiation(&mut self, msg: &[u8], src: SocketAddr, now: Instant) {
        if self.drain.is_some() {
            bump(&self.counters.handshake_refused_draining, 1);
            return;
        }
        // consume_initiation checks the MACs again (cheap) before any DH work, and answers
        // with the cookie reply itself when one is wanted.
        let Some((screened, under_load)) = self.screen_with_budget(msg, src, now) else {
            return;
        };
        if screened == Screened::Pass {
            self.work_done += 1;
        }
        let outcome = crate::handshake::consume_initiation(
            &self.identity,
            &mut self.cookies,
            msg,
            src,
            under_load,
            now,
            &mut self.rng,
        );
        let init = match outcome {
            Ok(InitiationOutcome::CookieReply(reply)) => {
                self.send_cookie_reply(&reply, src);
                return;
            }
            Ok(InitiationOutcome::Valid(init)) => init,
            Err(e) => {
                self.count_error(e);
                return;
            }
        };
        let Some(&slot) = self.by_key.get(init.remote_static()) else {
            bump(&self.counters.handshake_unknown_peer, 1);
            return;
        };
        if !self.admit_new_session(slot, src, now) {
            return;
        }
        let index = self.indices.new_response(slot, &mut self.rng);
        let Some(p) = self.peers.get_mut(slot) else {
            self.indices.unused(index);
            return;
        };
        match p
            .handshake
            .respond(&self.identity, init, index, now, &mut self.rng)
        {
            Ok((response, keypair)) => {
                bump(&self.counters.handshake_responses_sent, 1);
                self.handshake_completed(slot, keypair, KeypairRole::Responder, src, now);
                if let Some(d) = HandshakeDatagram::new(&response, src, None) {
                    self.transmits.push_back(d.with_local(self.arrived_on));
                }
            }
            Err(e) => {
                self.indices.unused(index);
                self.count_error(e);
            }
        }
        self.reschedule();
    }

    pub(super) fn on_response(&mut self, msg: &[u8], src: SocketAddr, now: Instant) {
        let Ok(view) = Response::new_checked(msg) else {
            return;
        };
        match self.screen_with_budget(msg, src, now) {
            None => return,
            Some((Screened::CookieWanted, _)) => {
                match self.cookies.create_reply(msg, src, now, &mut self.rng) {
                    Ok(reply) => self.send_cookie_reply(&reply, src),
                    Err(e) => self.count_error(e),
                }
                return;
            }
            Some(_) => {}
        }
        let Some(slot) = self.answered_slot(view.receiver_index()) else {
            return;
        };
        self.work_done += 1;
        let identity = &self.identity;
        let consumed =
            (self.peers.get_mut(slot)).map(|p| p.handshake.consume_response(identity, msg, now));
        match consumed {
            Some(Ok(keypair)) => {
                self.handshake_completed(slot, keypair, KeypairRole::Initiator, src, now);
            }
            Some(Err(e)) => self.count_error(e),
            None => {}
        }
        self.reschedule();
    }

    /// A handshake completed in either role: fresh keys for the dataplane, the endpoint it came
    /// from, and the end of any initiation round of ours (as WireGuard's "handshake complete"
    /// timer event stops the retransmissions whichever side initiated: the new keys make them
    /// moot).
    pub(super) fn handshake_completed(
        &mut self,
        slot: usize,
        keypair: veil_dataplane::Keypair,
        role: KeypairRole,
        src: SocketAddr,
        now: Instant,
    ) {
        let (completed, as_initiator) = match role {
            KeypairRole::Initiator => (&self.counters.handshakes_completed_initiator, true),
            KeypairRole::Responder => (&self.counters.handshakes_completed_responder, false),
        };
        bump(completed, 1);
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        if p.endpoint != Some(src) {
            info!("peer {}: endpoint {}", p.short, src);
        }
        p.endpoint = Some(src);
        p.local = p.sticky(self.arrived_on);
        let local = p.local;
        p.last_handshake = Some(now);
        let initiations = std::mem::take(&mut p.initiations_sent);
        if initiations > 0 {
            if self.rounds.len() >= MAX_ROUNDS_QUEUED {
                self.rounds.pop_front();
            }
            self.rounds.push_back(HandshakeRound {
                veil_peer: p.veil_peer,
                initiations,
            });
        }
        if p.breaker.failures() > 0 {
            info!("peer {}: handshake answered; circuit closed", p.short);
        }
        p.breaker.succeeded();
        p.attempt_started = None;
        p.retry_at = None;
        p.unanswered_for = None;
        p.keys_live = true;
        let who = if as_initiator {
            "initiator"
        } else {
            "responder"
        };
        info!("peer {}: handshake completed ({who})", p.short);
        let id = p.id;
        let keypair = std::sync::Arc::new(keypair);
        p.installed.push_back((keypair.clone(), role));
        while p.installed.len() > 3 {
            p.installed.pop_front();
        }
        self.indices.installed(slot, keypair.local_index, role, now);
        self.commands.push_back(Command::SetEndpoint {
            peer: id,
            endpoint: src,
            local,
        });
        self.commands.push_back(Command::InstallKeypair {
            peer: id,
            keypair,
            role,
            announce: true,
        });
        self.session_established(slot, now, as_initiator);
    }

    pub(super) fn on_cookie_reply(&mut self, msg: &[u8], now: Instant) {
        let Ok(view) = CookieReply::new_checked(msg) else {
            return;
        };
        let found = (self.answered_slot(view.receiver_index()))
            .and_then(|slot| Some((slot, self.peers.get_mut(slot)?)));
        let Some((slot, p)) = found else {
            return;
        };
        match p.handshake.consume_cookie_reply(msg, now) {
            Ok(()) => {
                bump(&self.counters.cookie_replies_received, 1);
                debug!(
                    "peer {}: cookie reply accepted; retrying with MAC2",
                    p.short
                );
                // The responder is under load: retry now with MAC2 rather than after
                // REKEY_TIMEOUT, at most once a second.
                let due = p.retry_at.is_some()
                    && p.cookie_resent
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
                if due {
                    p.cookie_resent = Some(now);
                    p.last_initiation = None;
                    self.send_initiation(slot, now);
                }
            }
            Err(e) => self.count_error(e),
        }
    }

    /// The slot of the handshake of ours that a response or cookie reply with this receiver
    /// index answers; counted as unexpected when no handshake has the index.
    pub(super) fn answered_slot(&self, receiver_index: u32) -> Option<usize> {
        let slot = self.indices.handshake_peer(receiver_index);
        if slot.is_none() {
            bump(&self.counters.handshake_unexpected, 1);
        }
        slot
    }

    pub(super) fn count_error(&self, e: HandshakeError) {
        let c = &self.counters;
        let field: &AtomicU64 = match e {
            HandshakeError::Mac1 => &c.handshake_bad_mac,
            HandshakeError::UnknownPeer => &c.handshake_unknown_peer,
            HandshakeError::ReplayedTimestamp => &c.handshake_replayed,
            HandshakeError::TooFast => &c.handshake_too_fast,
            HandshakeError::UnexpectedResponse => &c.handshake_unexpected,
            _ => &c.handshake_bad_crypto,
        };
        bump(field, 1);
    }
}

/// What [`Device::screen_handshake`] decided about a handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Screened {
    /// Go on to the handshake itself.
    Pass,
    /// Under load without a valid MAC2: answer with a cookie reply (admitted by its limit).
    CookieWanted,
    /// Dropped (and counted where the check counts).
    Refused,
}
