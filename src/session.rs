//! Who a session is (for its log lines) and the slots it holds: what the
//! stages after admission pass along.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::admit::{Permit, ServiceSlot, SourceSlot};

/// Who a session is, for its log lines.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub service: Arc<str>,
    pub port: u16,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub pid: u32,
    /// The run-as user, if any.
    pub user: Option<Arc<str>>,
}

/// The slots a session holds; dropping them gives them back.
#[derive(Debug)]
pub struct Slots {
    pub global: Permit,
    pub service: ServiceSlot,
    pub source: SourceSlot,
}
