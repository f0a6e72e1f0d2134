//! Who a session is (for its log lines) and the slots it holds: what the
//! stages after admission pass along.

use std::sync::Arc;

use crate::admit::{Permit, ServiceSlot, SourceSlot};
use crate::peer::{Local, Peer};

/// Who a session is, for its log lines.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub service: Arc<str>,
    /// The client: an IP address, or a Unix socket client's credentials.
    pub peer: Peer,
    /// The daemon's end: an IP address, or a Unix socket's path.
    pub local: Local,
    pub pid: u32,
    /// The run-as user, if any.
    pub user: Option<Arc<str>>,
}

impl SessionInfo {
    /// The port the client connected to; none for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        self.local.port()
    }
}

/// The slots a session holds; dropping them gives them back.
#[derive(Debug)]
pub struct Slots {
    pub global: Permit,
    pub service: ServiceSlot,
    pub source: SourceSlot,
}
