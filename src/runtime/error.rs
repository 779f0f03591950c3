//! What can stop `veil up`: one error type per step. [`PrepareError`]s are the operator's to
//! fix before anything exists (exit status 2); [`StartError`]s happen while the interface is
//! being made (exit status 1).

use std::fmt;
use std::io;

use veil_control::device::AddPeerError;
use veil_dataplane::route::IpNet;

use crate::admin::services::{ServiceOptionsError, SpawnError, WireError};
use crate::config::{ConfigErrors, InterfaceNameError, InterfaceNameProblem};
use crate::logging::LoggerError;
use crate::threading::LayoutError;

/// The config, the flags or the environment are refused.
#[derive(Debug)]
pub enum PrepareError {
    /// The config file.
    Config(ConfigErrors),
    /// The `[logging]` section could not be set up.
    Logger(LoggerError),
    /// `--interface` is not a usable interface name.
    InterfaceFlag(InterfaceNameProblem),
    /// No `--interface`, and the config file's name is not one.
    InterfaceName(InterfaceNameError),
    /// `[threading]` and the threading flags.
    Threading(LayoutError),
    /// `VEIL_TEST_REKEY_AFTER_SECS`.
    Timing(TimingError),
    /// The services' flags (`--metrics-listen`, test hooks).
    Services(ServiceOptionsError),
    /// `--user`.
    User(super::privilege::UserError),
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepareError::Config(e) => e.fmt(f),
            PrepareError::Logger(e) => e.fmt(f),
            PrepareError::InterfaceFlag(e) => write!(f, "--interface: {e}"),
            PrepareError::InterfaceName(e) => e.fmt(f),
            PrepareError::Threading(e) => e.fmt(f),
            PrepareError::Timing(e) => e.fmt(f),
            PrepareError::Services(e) => e.fmt(f),
            PrepareError::User(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PrepareError {}

/// `VEIL_TEST_REKEY_AFTER_SECS` is not a positive whole number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimingError {
    /// The variable's name.
    pub var: &'static str,
    /// What it held.
    pub value: String,
}

impl fmt::Display for TimingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}: expected a whole number of seconds > 0",
            self.var, self.value
        )
    }
}

impl std::error::Error for TimingError {}

/// Setting up the TUN interface through netlink failed.
#[derive(Debug)]
pub enum InterfaceError {
    /// No netlink socket.
    Netlink(io::Error),
    /// Setting the MTU.
    Mtu(io::Error),
    /// Adding one of the interface's addresses.
    Address(IpNet, io::Error),
    /// Bringing the interface up.
    Up(String, io::Error),
    /// Adding a peer's route.
    Route(IpNet, io::Error),
    /// wg-quick's policy routing for a full tunnel (what was being done).
    Rule(String, io::Error),
}

impl fmt::Display for InterfaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceError::Netlink(e) => write!(f, "netlink: {e}"),
            InterfaceError::Mtu(e) => write!(f, "set MTU: {e}"),
            InterfaceError::Address(a, e) => write!(f, "add address {a}: {e}"),
            InterfaceError::Up(name, e) => write!(f, "set {name} up: {e}"),
            InterfaceError::Route(n, e) => write!(f, "add route {n}: {e}"),
            InterfaceError::Rule(what, e) => write!(f, "policy routing: {what}: {e}"),
        }
    }
}

impl std::error::Error for InterfaceError {}

/// Making the interface and starting its threads failed.
#[derive(Debug)]
pub enum StartError {
    /// The UDP port.
    Bind(u16, io::Error),
    /// The bound socket's address.
    SocketAddress(io::Error),
    /// The socket's `FwMark`.
    Mark(io::Error),
    /// `DNS =` through resolvconf.
    Dns(super::dns::DnsError),
    /// The TUN device.
    CreateTun(String, io::Error),
    /// The TUN interface's addresses, MTU and routes.
    Interface(String, InterfaceError),
    /// A configured peer (at this line of the config).
    Peer(usize, AddPeerError),
    /// The RX thread's eventfd.
    EventFd(io::Error),
    /// The admin channel and histograms.
    Wire(WireError),
    /// A thread.
    Spawn(SpawnError),
    /// Giving up root.
    Privileges(super::privilege::DropError),
    /// `--take-over`: the hand-off from the running veil.
    Handoff(super::handoff::HandoffError),
    /// `--take-over`: what came over cannot be used here.
    Restore(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind(port, e) => write!(f, "cannot bind UDP port {port}: {e}"),
            StartError::SocketAddress(e) => write!(f, "socket address: {e}"),
            StartError::Mark(e) => write!(f, "set the UDP socket's fwmark: {e}"),
            StartError::Dns(e) => e.fmt(f),
            StartError::CreateTun(name, e) => write!(f, "cannot create TUN interface {name}: {e}"),
            StartError::Interface(name, e) => write!(f, "{name}: {e}"),
            StartError::Peer(line, e) => write!(f, "peer at line {line}: {e}"),
            StartError::EventFd(e) => write!(f, "eventfd: {e}"),
            StartError::Wire(e) => e.fmt(f),
            StartError::Spawn(e) => e.fmt(f),
            StartError::Privileges(e) => e.fmt(f),
            StartError::Handoff(e) => write!(f, "take-over failed: {e}"),
            StartError::Restore(why) => write!(f, "take-over failed: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<SpawnError> for StartError {
    fn from(e: SpawnError) -> Self {
        StartError::Spawn(e)
    }
}
