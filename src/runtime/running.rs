//! The running gateway: waiting for signals, draining, a live hand-off to a new process,
//! and what it logs when it ends.

use super::*;

impl Running {
    /// Stop every pipeline's loops.
    pub(super) fn shutdown(&self) {
        for s in &self.pipelines {
            s.shutdown();
        }
    }

    /// Is the thread that runs the control work (control, or the single thread) still beating?
    pub(super) fn drainer_alive(&self) -> bool {
        let Some(beat) = self.shared.heartbeats.get(Role::Control.slot()) else {
            return false;
        };
        let last = self.shared.epoch.instant(beat.load(Ordering::Relaxed));
        last.is_some_and(|t| t.elapsed() < STALE_HEARTBEAT)
    }

    /// One line with every non-zero counter, for operators and tests.
    pub(super) fn log_counters(&self) {
        let mut groups = crate::admin::context::dataplane_totals(&self.pipelines);
        groups.push(("control", self.control_counters.snapshot()));
        let line: Vec<String> = groups
            .iter()
            .flat_map(|(g, c)| {
                c.iter()
                    .filter(|(_, v)| *v > 0)
                    .map(move |(k, v)| format!("{g}.{k}={v}"))
            })
            .collect();
        info!("{}: counters: {}", self.name, line.join(" "));
    }

    /// Until a signal or a failure; then shut down. The supervisor's eventfd
    /// makes a failure (a panic, a fatal dataplane error) stop veil at once.
    pub(super) fn wait(
        mut self,
        signals: &sys::SignalFd,
        notifier: &Notifier,
        mut watchdog: Option<Watchdog>,
        hooks: &mut privilege::HookRunner,
    ) -> Ended {
        let supervisor = supervisor();
        let failure = loop {
            let ready = {
                use std::os::fd::AsFd;
                let mut fds = vec![signals.as_fd()];
                fds.extend(supervisor.bell_fd());
                fds.extend(self.handoff.as_ref().map(|h| h.listener.as_fd()));
                sys::wait_readable(&fds, Some(Duration::from_secs(1)))
            };
            crate::logging::tick();
            supervisor.drain_bell();
            if let Some(f) = supervisor.failure() {
                break Some(f);
            }
            if self.serve_takeover() {
                self.hand_over(watchdog, hooks);
                return Ended::HandedOver;
            }
            if let Some(path) = self.uapi_watch.as_ref().filter(|p| !p.exists()) {
                info!("{}: {} was removed; stopping", self.name, path.display());
                break None;
            }
            match ready.and_then(|_| signals.read()) {
                Ok(Some(sig)) => {
                    info!(
                        "{}: {sig:?} received; draining (a second signal stops at once)",
                        self.name
                    );
                    break None;
                }
                Ok(None) => {}
                Err(e) => {
                    error!("signal wait failed: {e}");
                    break None;
                }
            }
        };
        supervisor.begin_shutdown();
        if let Some(f) = &failure {
            self.log_failure(f);
        }
        notifier.stopping(&match &failure {
            Some(f) => format!("{}: failed: {f}", self.name),
            None => format!("{}: stopping", self.name),
        });
        if let Some(w) = watchdog.as_mut() {
            w.stop();
        }
        hooks.run_logged(hooks::Moment::PreDown);
        // wg-quick's order: PreDown, save_config, then the interface goes.
        if let Some(save) = &self.save {
            save.save(&self.name);
        }
        // After a failure, drain only briefly: the service manager should restart veil soon.
        let limit = if failure.is_some() {
            self.drain_timeout.min(FAILED_DRAIN_LIMIT)
        } else {
            self.drain_timeout
        };
        self.drain(signals, limit);
        self.shutdown();
        if let Some(h) = self.handoff.take() {
            h.close();
        }
        Ended::Stopped(self.log_counters_after_join())
    }

    /// A take-over waiting on the hand-off socket: serve it. True once the new process serves.
    pub(super) fn serve_takeover(&mut self) -> bool {
        let Some(mut listening) = self.handoff.take() else {
            return false;
        };
        let handed = match listening.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).is_ok() && {
                    let old = takeover::OldSide {
                        name: &self.name,
                        admin: &self.admin,
                        pipelines: &self.pipelines,
                        udps: &self.udps,
                        tuns: &self._tun,
                        listeners: &self.listeners,
                        offloads: self.offloads,
                        stats: &self.context.handoffs,
                    };
                    old.serve(&mut listening, stream)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => {
                warn!("{}: hand-off socket: {e}", self.name);
                false
            }
        };
        self.handoff = Some(listening);
        handed
    }

    /// A take-over completed: stop serving and end with status 0, leaving everything the
    /// interface has (its routes, rules, DNS, socket files, the token) to the new process.
    pub(super) fn hand_over(
        self,
        mut watchdog: Option<Watchdog>,
        hooks: &mut privilege::HookRunner,
    ) {
        supervisor().begin_shutdown();
        if let Some(w) = watchdog.as_mut() {
            w.stop();
        }
        hooks.release_sockets();
        self.shutdown();
        let Running {
            threads,
            _services,
            _dns,
            _routing,
            name,
            ..
        } = self;
        _services.release();
        for t in threads {
            let _ = t.join();
        }
        // Undoing these would undo them for the new process.
        std::mem::forget(_dns);
        std::mem::forget(_routing);
        info!("{name}: handed over; exiting");
    }

    /// Graceful drain: the control thread stops accepting sessions, tells veil peers,
    /// lets in-flight packets out and expires every session; bounded by the drain
    /// timeout, cut short by a second signal.
    pub(super) fn drain(&self, signals: &sys::SignalFd, limit: Duration) {
        self.shared.drain_requested.store(true, Ordering::SeqCst);
        self.shared.control_bell.wake_now();
        self.shared.rx_bell.wake_now();
        let deadline = Instant::now() + limit;
        loop {
            if self.shared.drain_done.load(Ordering::SeqCst) {
                info!("{}: drained", self.name);
                return;
            }
            // Nothing left to drain with: the loops stopped (a fatal fault), or the
            // thread that drains has not beaten for a while (stalled or dead).
            let stopped = self.pipelines.iter().any(|s| s.stop.load(Ordering::SeqCst));
            if stopped || !self.drainer_alive() {
                warn!(
                    "{}: cannot drain (the dataplane has stopped); stopping",
                    self.name
                );
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("{}: drain timeout reached; stopping", self.name);
                return;
            }
            if let Ok(Some(sig)) = next_signal(signals, left.min(Duration::from_millis(20))) {
                warn!(
                    "{}: second signal ({sig:?}); stopping without finishing the drain",
                    self.name
                );
                return;
            }
        }
    }

    /// Start-up failed after the threads started (a failing PostUp): stop them without a
    /// drain and remove the interface, as wg-quick's `del_if` would (no down hooks).
    pub(super) fn abort(self) {
        supervisor().begin_shutdown();
        self.shutdown();
        let _ = self.log_counters_after_join();
    }

    pub(super) fn log_failure(&self, failure: &Failure) {
        // A thread that ended on its own after a dataplane fault: the fault is the cause.
        match (failure, self.shared.fault.get()) {
            (Failure::Ended { .. }, Some(fault)) => error!(
                class = ErrorClass::Restart.as_str();
                "{}: {fault}; shutting down so the service manager can restart veil",
                self.name
            ),
            (Failure::Panicked { .. }, _) => error!(
                class = ErrorClass::Panic.as_str();
                "{}: {failure}; shutting down so the service manager can restart veil",
                self.name
            ),
            (Failure::Ended { .. }, None) => error!(
                class = ErrorClass::Restart.as_str();
                "{}: {failure}; shutting down so the service manager can restart veil",
                self.name
            ),
        }
    }

    pub(super) fn log_counters_after_join(mut self) -> ExitCode {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.log_counters();
        info!("{}: stopped; interface removed", self.name);
        // Also a failure during shutdown (a panic while draining) is one.
        if supervisor().failure().is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
