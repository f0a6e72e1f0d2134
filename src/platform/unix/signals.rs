//! Linux: the daemon's signals read from signalfds, with no handler.
//!
//! Each signal the daemon acts on (SIGTERM and SIGINT to stop, SIGHUP to
//! reload, SIGCHLD to reap) is blocked and read from a signalfd by the
//! runtime. With no handler of the daemon's for any asynchronous signal, a
//! child between `clone` and exec can receive none that would run the
//! daemon's code, so starting one needs no signal mask change.
//!
//! A signal must be blocked in every thread, or one that does not block it
//! may take it: [`SignalStream::new`] blocks it in the calling thread, which
//! must be the runtime's, before the runtime starts any thread of its own
//! (they inherit the mask). SIGCHLD is blocked from the start
//! (`init_process`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Blocks `signals` in the calling thread (and the threads it starts
/// later); returns them as a set.
pub fn block(signals: &[Signal]) -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(signal);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Signals read one at a time from a signalfd.
#[derive(Debug)]
pub struct SignalStream {
    fd: AsyncFd<SignalFd>,
}

impl SignalStream {
    /// Blocks `signals` in this thread and reads them from now on. Call
    /// inside the runtime, on its thread.
    pub fn new(signals: &[Signal]) -> io::Result<Self> {
        let set = block(signals)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // SAFETY: a `SignalFd` owns its descriptor and returns the same one
        // from `as_raw_fd` until it is dropped, which only happens with the
        // `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Waits for one or more of the signals, takes every one pending, and
    /// returns the first. A standard signal is pending at most once,
    /// however often it was sent; one sent after the read raises the
    /// descriptor again, so none is missed.
    pub async fn recv(&self) -> io::Result<Signal> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut infos = [const { MaybeUninit::<libc::signalfd_siginfo>::uninit() }; 8];
            // SAFETY: reads whole `signalfd_siginfo` records into `infos`,
            // which has room for `size_of_val(&infos)` bytes.
            let read = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    infos.as_mut_ptr().cast(),
                    std::mem::size_of_val(&infos),
                )
            };
            let count = usize::try_from(read)
                .map(|bytes| bytes / size_of::<libc::signalfd_siginfo>())
                .map_err(|_| io::Error::last_os_error());
            match count {
                // Fewer than asked: none is left pending.
                Ok(n) if n < infos.len() => ready.clear_ready(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let n = count.unwrap_or(0);
            // SAFETY: the kernel wrote the first `n` records.
            let first = (n > 0).then(|| unsafe { infos[0].assume_init_ref().ssi_signo });
            let signal =
                first.and_then(|number| Signal::try_from(i32::try_from(number).ok()?).ok());
            if let Some(signal) = signal {
                return Ok(signal);
            }
        }
    }
}
