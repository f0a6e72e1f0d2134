//! The relay of `stdio = "pipe"`: the daemon stands between the connection
//! and a program's pipes, carrying EOF both ways.
//!
//! A relay is part of its session: it is made before the program starts
//! (so that nothing is left to fail once the program runs), runs on a task
//! the session owns, and the session ends only once the program has exited
//! *and* the relay has drained. So a relay held open by whatever inherited
//! the program's output still counts against the session caps and the
//! daemon's descriptors. Ending a session early (stop, `max_lifetime`)
//! ends its relay with it.
//!
//! The bytes move in the platform's byte movers (`platform::Relay`:
//! splice(2) on Linux, buffered copies elsewhere); later kinds of relay
//! (TLS) are kinds of this stage too.

use std::io;
use std::time::Duration;

use socket2::Socket;
use tokio::task::JoinHandle;

use crate::platform::{self, ChildStdio};

/// A relay made for a connection, not running yet.
#[derive(Debug)]
pub struct Relay(platform::Relay);

/// A running relay, owned by its session; dropping it ends the relay.
#[derive(Debug)]
pub struct Running(Option<JoinHandle<()>>);

impl Relay {
    /// Makes the pipes for `socket`: the relay, and what the program gets
    /// as its stdin and stdout. `timeout` bounds each wait on the
    /// connection, as SO_RCVTIMEO and SO_SNDTIMEO do in socket mode.
    pub fn new(socket: Socket, timeout: Option<Duration>) -> io::Result<(Self, ChildStdio)> {
        let (relay, ends) = platform::Relay::new(socket, timeout)?;
        Ok((Self(relay), ChildStdio::Relayed(ends)))
    }

    /// Starts moving bytes, once the program runs.
    pub fn start(self) -> Running {
        Running(Some(tokio::spawn(self.0.run())))
    }
}

impl Running {
    /// Resolves once the relay is done: the program's output has ended (and
    /// the connection's sending side is shut down), or the connection has
    /// failed.
    pub async fn drained(&mut self) {
        if let Some(task) = &mut self.0 {
            let _ = task.await;
            self.0 = None;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
