//! A live hand-off on one host (issue 15): `veil up CONFIG --take-over` replaces the running
//! veil of the interface without ending a session.
//!
//! The running veil listens on `/run/veil/IFACE/handoff.sock` (mode 0600, next to its control
//! socket) and keeps a one-time token in `/run/veil/IFACE/handoff.token` (mode 0600, root's to
//! read). The exchange, each step with a deadline ([`Deadlines`]):
//!
//! 1. new → old, **hello**: the new process's ephemeral X25519 key and a MAC of it under the
//!    token. The old one checks the caller's credentials (`SO_PEERCRED`: root or its own user)
//!    and the MAC, and writes a fresh token at once (a token opens one attempt).
//! 2. old, **preparing**: RX stops reading on every pipeline ([`Shared::set_paused`]; what
//!    arrives waits in the kernel's queues), in-flight packets finish ([`SETTLE`]), and the
//!    control thread captures every session ([`veil_control::handoff`]).
//! 3. old → new, **transferring**: an offer (its ephemeral key, the descriptor counts, the TUN
//!    offloads) carrying the TUN queues, UDP sockets and operator listeners (`SCM_RIGHTS`),
//!    then the state sealed with ChaCha20-Poly1305 under `BLAKE2s-MAC(token, DH(e_old, e_new)
//!    || e_new || e_old)`, the offer as associated data. The key is the transfer's own: a
//!    state recorded from an earlier transfer does not open under it (a replay is refused),
//!    and an altered byte fails the tag.
//! 4. new: restores the state, starts its dataplane on those descriptors, checks its threads
//!    beat, and sends **ready** (a MAC under the transfer key).
//! 5. old: answers **released**, then stops its operator services (leaving their socket
//!    files, which now belong to the new process) and its dataplane, and exits 0 without
//!    undoing anything the interface has (routes, rules, DNS). The new process starts its
//!    services on the listeners it was given. **Completed.**
//!
//! Anything that fails before *ready* (a bad MAC, a deadline, a state the new process
//! refuses, the new process dying) is **failed**: the old process resumes (RX reads again, its
//! keypairs skip the send counters the new one may have used) and serves on with its state
//! untouched; the new one exits non-zero. Every message is untrusted: lengths are capped and
//! checked, an error is a clear message, never a panic. The plaintext state and the transfer
//! key are wiped after use on both sides.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac256;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::{OsRng, RngCore};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use veil_dataplane::offload::TunOffloads;
use veil_dataplane::sys::handoff as fdpass;

/// The hand-off socket's file name in the interface's runtime directory.
pub const SOCKET_NAME: &str = "handoff.sock";
/// The token's file name there.
pub const TOKEN_NAME: &str = "handoff.token";
const TOKEN_LEN: usize = 32;

/// Time for in-flight packets to leave the pipelines once RX stopped reading.
pub const SETTLE: Duration = Duration::from_millis(20);

const VERSION: u8 = 1;
const HELLO_LEN: usize = 1 + 32 + 32;
/// The offer: magic, version, the old ephemeral key, counts and flags, the old pid.
const OFFER_LEN: usize = 6 + 1 + 32 + 1 + 1 + 1 + 1 + 1 + 4;
const OFFER_MAGIC: &[u8; 6] = b"VEILHO";
/// The largest sealed state accepted (about 10,000 sessions take 35 MB).
pub const MAX_STATE: usize = 256 << 20;
const READY: u8 = 0x52;
const RELEASED: u8 = 0x44;
const ABORT: u8 = 0x58;
const MAX_ABORT_TEXT: usize = 512;

/// Labels mixed into the MACs, so no MAC of one step passes for another.
const LABEL_HELLO: &[u8] = b"veil handoff v1 hello";
const LABEL_KEY: &[u8] = b"veil handoff v1 key";
const LABEL_READY: &[u8] = b"veil handoff v1 ready";

/// The deadline of each step.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the hello, after the connection.
    pub hello: Duration,
    /// For the whole transfer (offer and state) to be written or read.
    pub transfer: Duration,
    /// For the new process to restore, start and check itself.
    pub ready: Duration,
    /// For the old process to let go.
    pub released: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            hello: Duration::from_secs(2),
            transfer: Duration::from_secs(10),
            ready: Duration::from_secs(10),
            released: Duration::from_secs(5),
        }
    }
}

/// Where a hand-off stands (logged, and shown by `veil show` / `/metrics` as the last result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing in progress.
    Idle,
    /// The old process stopped reading and captures its state.
    Preparing,
    /// The state and the descriptors are on their way.
    Transferring,
    /// The new process serves; the old one exits.
    Completed,
    /// The old process serves on.
    Failed,
}

impl Phase {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Preparing => "preparing",
            Phase::Transferring => "transferring",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }
}

/// Why a hand-off failed.
#[derive(Debug)]
pub enum HandoffError {
    /// No veil serves this interface (no socket, or nobody listening).
    NotRunning(PathBuf, io::Error),
    /// The token file cannot be read.
    Token(PathBuf, io::Error),
    /// The socket failed, or a deadline passed.
    Io(&'static str, io::Error),
    /// The other side is not root nor this process's user.
    Credentials(u32),
    /// The other side did not prove it holds the token.
    BadHello,
    /// The offer is not one this veil understands.
    BadOffer(&'static str),
    /// The sealed state did not open (altered, or from another transfer).
    Sealed,
    /// The state opened but does not decode.
    State(veil_control::handoff::DecodeError),
    /// The other side gave up, saying why.
    Aborted(String),
    /// The other side answered with something else.
    Unexpected(&'static str),
}

impl std::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandoffError::NotRunning(p, e) => {
                write!(f, "no running veil answers on {}: {e}", p.display())
            }
            HandoffError::Token(p, e) => write!(f, "cannot read the token {}: {e}", p.display()),
            HandoffError::Io(step, e) => write!(f, "hand-off {step}: {e}"),
            HandoffError::Credentials(uid) => write!(
                f,
                "refused a hand-off from uid {uid} (only root or veil's own user may take over)"
            ),
            HandoffError::BadHello => f.write_str("refused a hand-off without the right token"),
            HandoffError::BadOffer(why) => write!(f, "refused the hand-off offer: {why}"),
            HandoffError::Sealed => f.write_str(
                "refused the hand-off state: it does not authenticate under this transfer's key (altered or replayed)",
            ),
            HandoffError::State(e) => write!(f, "refused the hand-off state: {e}"),
            HandoffError::Aborted(why) => write!(f, "the other process gave up: {why}"),
            HandoffError::Unexpected(what) => write!(f, "hand-off: expected {what}"),
        }
    }
}

impl std::error::Error for HandoffError {}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> HandoffError {
    move |e| HandoffError::Io(step, e)
}

/// The interface's hand-off socket and token paths.
pub fn paths(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(crate::admin::ctl::CTL_DIR).join(name);
    (dir.join(SOCKET_NAME), dir.join(TOKEN_NAME))
}

/// The token file of a running veil: written again after every attempt through the handle
/// kept open here (so it works after veil gave up root), removed at exit.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    file: File,
    token: Zeroizing<[u8; TOKEN_LEN]>,
}

impl TokenFile {
    /// Make the token file (mode 0600) with a fresh token.
    pub fn create(path: &Path) -> io::Result<TokenFile> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).create(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut t = TokenFile {
            path: path.to_path_buf(),
            file,
            token: Zeroizing::new([0; TOKEN_LEN]),
        };
        t.renew()?;
        Ok(t)
    }

    /// The token file a live hand-off passed over (open for writing), with a fresh token.
    pub fn adopt(path: &Path, fd: OwnedFd) -> io::Result<TokenFile> {
        let mut t = TokenFile {
            path: path.to_path_buf(),
            file: File::from(fd),
            token: Zeroizing::new([0; TOKEN_LEN]),
        };
        t.renew()?;
        Ok(t)
    }

    /// A duplicate of the file's descriptor, to pass over.
    pub fn fd(&self) -> io::Result<OwnedFd> {
        self.file.try_clone().map(OwnedFd::from)
    }

    /// A new token, in memory and in the file (the old one opens nothing any more).
    pub fn renew(&mut self) -> io::Result<()> {
        OsRng.fill_bytes(&mut self.token[..]);
        let text = Zeroizing::new(hex(&self.token[..]));
        self.file.rewind()?;
        self.file.set_len(0)?;
        self.file.write_all(text.as_bytes())?;
        self.file.flush()
    }

    fn token(&self) -> &[u8; TOKEN_LEN] {
        &self.token
    }

    /// Remove the file (veil is ending, or handed over: the new process has its own).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read a token file's text (64 hex digits).
fn read_token(path: &Path) -> Result<Zeroizing<[u8; TOKEN_LEN]>, HandoffError> {
    let bad = |e: io::Error| HandoffError::Token(path.to_path_buf(), e);
    let mut text = Zeroizing::new(String::new());
    File::open(path)
        .and_then(|f| f.take(256).read_to_string(&mut text))
        .map_err(bad)?;
    let text = text.trim();
    let invalid = || {
        bad(io::Error::new(
            io::ErrorKind::InvalidData,
            "not 64 hex digits",
        ))
    };
    if text.len() != TOKEN_LEN * 2 {
        return Err(invalid());
    }
    let mut out = Zeroizing::new([0u8; TOKEN_LEN]);
    for (i, b) in out.iter_mut().enumerate() {
        *b = text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(invalid)?;
    }
    Ok(out)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2s key.
    let mut m = match <Blake2sMac256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn mac_ok(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let Ok(mut m) = <Blake2sMac256 as KeyInit>::new_from_slice(key) else {
        return false;
    };
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// The transfer key; `None` for a low-order key (an all-zero agreement).
fn transfer_key(
    token: &[u8; TOKEN_LEN],
    mine: EphemeralSecret,
    theirs: &PublicKey,
    e_new: &[u8; 32],
    e_old: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    let shared = mine.diffie_hellman(theirs);
    if !shared.was_contributory() {
        return None;
    }
    Some(Zeroizing::new(mac(
        &token[..],
        &[LABEL_KEY, shared.as_bytes(), e_new, e_old],
    )))
}

fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    // One message per key: the zero nonce is used once.
    cipher
        .encrypt(&[0u8; 12].into(), Payload { msg: plain, aad })
        .unwrap_or_default()
}

fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(&[0u8; 12].into(), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}

fn write_frame(s: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    s.write_all(&len.to_le_bytes())?;
    s.write_all(body)
}

fn read_frame(s: &mut UnixStream, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {max})"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn set_deadline(s: &UnixStream, d: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(d))?;
    s.set_write_timeout(Some(d))
}

/// Tell the other side why we give up (best effort: it may be gone).
fn abort(s: &mut UnixStream, why: &str) {
    let mut body = vec![ABORT];
    body.extend(why.as_bytes().iter().take(MAX_ABORT_TEXT));
    let _ = write_frame(s, &body);
}

/// A one-byte message, or the other side's abort.
fn expect(s: &mut UnixStream, byte: u8, what: &'static str) -> Result<Vec<u8>, HandoffError> {
    let body = read_frame(s, 64 + MAX_ABORT_TEXT).map_err(io_err(what))?;
    match body.first() {
        Some(b) if *b == byte => Ok(body),
        Some(&ABORT) => Err(HandoffError::Aborted(
            String::from_utf8_lossy(&body[1..]).into_owned(),
        )),
        _ => Err(HandoffError::Unexpected(what)),
    }
}

/// The optional descriptors, in the order they travel; each one's flag bit in the offer is
/// its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// The UAPI listener.
    Uapi,
    /// The control socket's listener.
    Ctl,
    /// The metrics listener.
    Metrics,
    /// The hand-off socket's listener (the next take-over connects to it).
    Handoff,
    /// The token file, open for writing (the new process renews it).
    Token,
}

/// How many [`Extra`] there are.
const EXTRAS: usize = 5;

/// The descriptors that travel: every pipeline's TUN queue and UDP socket, and the
/// [`Extra`] ones that exist.
#[derive(Debug)]
pub struct Descriptors<F> {
    /// TUN queues, in pipeline order.
    pub tuns: Vec<F>,
    /// UDP sockets, in pipeline order.
    pub udps: Vec<F>,
    /// By [`Extra`].
    pub extra: [Option<F>; EXTRAS],
}

impl<F> Default for Descriptors<F> {
    fn default() -> Self {
        Self {
            tuns: Vec::new(),
            udps: Vec::new(),
            extra: std::array::from_fn(|_| None),
        }
    }
}

impl<F> Descriptors<F> {
    /// Take one of the [`Extra`] descriptors out.
    pub fn take(&mut self, e: Extra) -> Option<F> {
        self.extra[e as usize].take()
    }

    fn flags(&self) -> u8 {
        self.extra
            .iter()
            .enumerate()
            .fold(0, |f, (i, o)| f | (u8::from(o.is_some()) << i))
    }
}

/// The old process's side, from an accepted connection to the answer: `capture` pauses the
/// dataplane and returns the state's bytes. Returns `Ok` once the new process confirmed (this
/// one then stops serving and exits); on an error the caller resumes.
pub struct Serve<'a> {
    /// The token file (renewed here).
    pub token: &'a mut TokenFile,
    /// The descriptors to pass.
    pub fds: Descriptors<RawFd>,
    /// The TUN queues' offloads.
    pub offloads: TunOffloads,
    /// Deadlines.
    pub deadlines: Deadlines,
}

impl std::fmt::Debug for Serve<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

/// What [`Serve::run`] went through before it returned, for the log and the rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing was paused or captured.
    Nothing,
    /// The dataplane was paused and the state captured.
    Captured,
}

impl Serve<'_> {
    /// Run the old side on `stream`. `capture` is called once the caller is authenticated;
    /// `on_phase` hears each phase.
    pub fn run(
        &mut self,
        stream: &mut UnixStream,
        capture: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, String>,
        mut on_phase: impl FnMut(Phase),
        reached: &mut Reached,
    ) -> Result<(), HandoffError> {
        let (uid, _pid) = fdpass::peer_credentials(stream).map_err(io_err("credentials"))?;
        let own = veil_dataplane::sys::privilege::effective_uid();
        if uid != 0 && uid != own {
            abort(stream, "not root nor veil's user");
            return Err(HandoffError::Credentials(uid));
        }
        set_deadline(stream, self.deadlines.hello).map_err(io_err("hello"))?;
        let mut hello = [0u8; HELLO_LEN];
        let read = stream.read_exact(&mut hello);
        // One attempt per token, whatever the hello says.
        let token = Zeroizing::new(*self.token.token());
        self.token.renew().map_err(io_err("token"))?;
        read.map_err(io_err("hello"))?;
        let (version, rest) = hello.split_at(1);
        let (e_new, proof) = rest.split_at(32);
        if version[0] != VERSION || !mac_ok(&token[..], &[LABEL_HELLO, e_new], proof) {
            abort(stream, "bad hello");
            return Err(HandoffError::BadHello);
        }
        let mut e_new_b = [0u8; 32];
        e_new_b.copy_from_slice(e_new);
        let mine = EphemeralSecret::random_from_rng(OsRng);
        let e_old = PublicKey::from(&mine).to_bytes();
        let Some(key) = transfer_key(&token, mine, &PublicKey::from(e_new_b), &e_new_b, &e_old)
        else {
            abort(stream, "bad hello");
            return Err(HandoffError::BadHello);
        };

        on_phase(Phase::Preparing);
        let plain = capture().map_err(|e| {
            abort(stream, &e);
            HandoffError::Aborted(e)
        })?;
        *reached = Reached::Captured;
        on_phase(Phase::Transferring);
        let offer = self.offer(&e_old);
        let sealed = seal(&key, &offer, &plain);
        drop(plain);
        set_deadline(stream, self.deadlines.transfer).map_err(io_err("transfer"))?;
        let fds: Vec<RawFd> = self
            .fds
            .tuns
            .iter()
            .chain(&self.fds.udps)
            .chain(self.fds.extra.iter().flatten())
            .copied()
            .collect();
        fdpass::send_with_fds(stream, &offer, &fds).map_err(io_err("offer"))?;
        write_frame(stream, &sealed).map_err(io_err("transfer"))?;
        set_deadline(stream, self.deadlines.ready).map_err(io_err("ready"))?;
        let ready = expect(stream, READY, "ready")?;
        if !mac_ok(&key[..], &[LABEL_READY, &offer], &ready[1..]) {
            return Err(HandoffError::Unexpected("an authentic ready"));
        }
        set_deadline(stream, self.deadlines.released).map_err(io_err("released"))?;
        write_frame(stream, &[RELEASED]).map_err(io_err("released"))?;
        Ok(())
    }

    fn offer(&self, e_old: &[u8; 32]) -> Vec<u8> {
        let mut o = Vec::with_capacity(OFFER_LEN);
        o.extend_from_slice(OFFER_MAGIC);
        o.push(VERSION);
        o.extend_from_slice(e_old);
        o.push(u8::try_from(self.fds.tuns.len()).unwrap_or(u8::MAX));
        o.push(u8::try_from(self.fds.udps.len()).unwrap_or(u8::MAX));
        o.push(self.fds.flags());
        o.push(u8::from(self.offloads.vnet));
        o.push(u8::from(self.offloads.uso));
        o.extend_from_slice(&std::process::id().to_le_bytes());
        o
    }
}

/// What the new process received: the descriptors, the offloads, the state's bytes, and the
/// connection to confirm on.
pub struct Received {
    /// The descriptors, sorted by kind.
    pub fds: Descriptors<OwnedFd>,
    /// The TUN queues' offloads.
    pub offloads: TunOffloads,
    /// The old process's pid.
    pub old_pid: u32,
    /// The state (wiped when dropped).
    pub state: Zeroizing<Vec<u8>>,
    /// When the connection was made (the pause began about then).
    pub started: Instant,
    stream: UnixStream,
    key: Zeroizing<[u8; 32]>,
    offer: Vec<u8>,
    deadlines: Deadlines,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("old_pid", &self.old_pid)
            .field("state_bytes", &self.state.len())
            .finish_non_exhaustive()
    }
}

/// The new process's side up to the state: connect to the interface's running veil, prove
/// the token, receive the offer, descriptors and state.
pub fn take(name: &str, deadlines: Deadlines) -> Result<Received, HandoffError> {
    let (socket, token) = paths(name);
    let token = read_token(&token)?;
    let stream =
        UnixStream::connect(&socket).map_err(|e| HandoffError::NotRunning(socket.clone(), e))?;
    take_on(stream, &token, deadlines)
}

/// [`take`] on a connected stream.
pub fn take_on(
    mut stream: UnixStream,
    token: &[u8; TOKEN_LEN],
    deadlines: Deadlines,
) -> Result<Received, HandoffError> {
    let started = Instant::now();
    set_deadline(&stream, deadlines.hello).map_err(io_err("hello"))?;
    let mine = EphemeralSecret::random_from_rng(OsRng);
    let e_new = PublicKey::from(&mine).to_bytes();
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.push(VERSION);
    hello.extend_from_slice(&e_new);
    hello.extend_from_slice(&mac(&token[..], &[LABEL_HELLO, &e_new]));
    stream.write_all(&hello).map_err(io_err("hello"))?;
    // The old process pauses, captures and seals before it answers.
    set_deadline(&stream, deadlines.transfer).map_err(io_err("transfer"))?;
    let mut offer = vec![0u8; OFFER_LEN];
    let (n, fds) = fdpass::recv_with_fds(&stream, &mut offer).map_err(io_err("offer"))?;
    if n == 0 {
        return Err(HandoffError::Unexpected("an offer"));
    }
    if offer.get(4) == Some(&ABORT) {
        // The old process gave up instead of offering: an abort frame (its length first).
        let len = u32::from_le_bytes([offer[0], offer[1], offer[2], offer[3]]) as usize;
        let text = offer.get(5..n.min(4 + len)).unwrap_or_default();
        return Err(HandoffError::Aborted(
            String::from_utf8_lossy(text).into_owned(),
        ));
    }
    if n < OFFER_LEN {
        // A short first read: the rest of the offer (the descriptors came with its start).
        stream
            .read_exact(&mut offer[n..])
            .map_err(io_err("offer"))?;
    }
    if !offer.starts_with(OFFER_MAGIC) {
        return Err(HandoffError::BadOffer("not a veil hand-off offer"));
    }
    let fds = sort_fds(&offer, fds)?;
    let mut e_old = [0u8; 32];
    e_old.copy_from_slice(&offer[7..39]);
    let offloads = TunOffloads {
        vnet: offer[42] == 1,
        uso: offer[43] == 1,
    };
    let mut pid = [0u8; 4];
    pid.copy_from_slice(&offer[44..48]);
    let key = transfer_key(token, mine, &PublicKey::from(e_old), &e_new, &e_old)
        .ok_or(HandoffError::BadOffer("a low-order key"))?;
    let sealed = read_frame(&mut stream, MAX_STATE).map_err(io_err("transfer"))?;
    let state = open(&key, &offer, &sealed).ok_or(HandoffError::Sealed)?;
    Ok(Received {
        fds,
        offloads,
        old_pid: u32::from_le_bytes(pid),
        state,
        started,
        stream,
        key,
        offer,
        deadlines,
    })
}

fn sort_fds(offer: &[u8], fds: Vec<OwnedFd>) -> Result<Descriptors<OwnedFd>, HandoffError> {
    if offer[6] != VERSION {
        return Err(HandoffError::BadOffer("another version"));
    }
    let (tuns, udps, flags) = (offer[39] as usize, offer[40] as usize, offer[41]);
    if tuns == 0 || tuns != udps || flags >> EXTRAS != 0 || offer[42] > 1 || offer[43] > 1 {
        return Err(HandoffError::BadOffer("descriptor counts"));
    }
    let want = tuns + udps + flags.count_ones() as usize;
    if fds.len() != want {
        return Err(HandoffError::BadOffer(
            "the descriptors passed are not the ones announced",
        ));
    }
    let mut it = fds.into_iter();
    let mut take = |n: usize| it.by_ref().take(n).collect::<Vec<_>>();
    let tuns = take(tuns);
    let udps = take(udps);
    let mut extra: [Option<OwnedFd>; EXTRAS] = std::array::from_fn(|_| None);
    for (bit, slot) in extra.iter_mut().enumerate() {
        if flags & (1 << bit) != 0 {
            *slot = take(1).pop();
        }
    }
    Ok(Descriptors { tuns, udps, extra })
}

impl Received {
    /// The new process restored and checked itself: confirm, and wait until the old one let go
    /// of what it served (its operator services, its dataplane).
    pub fn confirm(mut self) -> Result<u32, HandoffError> {
        let tag = mac(&self.key[..], &[LABEL_READY, &self.offer]);
        let mut body = vec![READY];
        body.extend_from_slice(&tag);
        set_deadline(&self.stream, self.deadlines.released).map_err(io_err("ready"))?;
        write_frame(&mut self.stream, &body).map_err(io_err("ready"))?;
        expect(&mut self.stream, RELEASED, "released")?;
        Ok(self.old_pid)
    }

    /// The new process cannot go on: tell the old one, which resumes.
    pub fn refuse(mut self, why: &str) {
        abort(&mut self.stream, why);
    }
}

#[cfg(test)]
mod tests;
