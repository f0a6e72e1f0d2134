//! The pid file: where a daemon started without a service manager says
//! which process it is, so that `wininetd --reload` can find it and signal
//! it (on Unix; on Windows the service manager finds the service).
//!
//! This module owns the file's format (the decimal pid and a newline), its
//! default place, writing it and removing it; reading it back for a reload
//! is [`read_pid`]'s, which refuses anything but one plausible pid. Which
//! process the pid names is checked by the reload itself
//! (`unix/install.rs`).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Where a daemon running as root without `--debug` writes its pid file on
/// Unix, and where `--reload` looks when not told.
#[cfg(unix)]
pub(crate) const DEFAULT_PIDFILE: &str = "/run/wininetd.pid";

/// The pid file a daemon writes when `--pidfile` is not given: on Unix,
/// [`DEFAULT_PIDFILE`] when it runs as root (only root may write `/run`);
/// none on Windows, whose reload goes through the service manager.
pub fn default_pidfile() -> Option<PathBuf> {
    #[cfg(unix)]
    return nix::unistd::Uid::effective()
        .is_root()
        .then(|| PathBuf::from(DEFAULT_PIDFILE));
    #[cfg(windows)]
    return None;
}

/// A pid file this process wrote; removed on drop if it still names this
/// process (another daemon may have taken the same file since).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path`, replacing what was there: a
    /// temporary file in the same directory renamed over it, so that a
    /// reader never sees a part and a symlink at `path` is replaced, not
    /// followed.
    ///
    /// On Linux, SIGHUP is blocked first in the calling thread (the one
    /// that goes on to run the server, whose reload reads SIGHUP from a
    /// signalfd with it blocked anyway): a `--reload` that reads the file
    /// before the server listens for SIGHUP then leaves the signal pending
    /// for it, where the default action would end the daemon.
    pub fn create(path: &Path) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
            let mut set = SigSet::empty();
            set.add(Signal::SIGHUP);
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        let mut last = None;
        for n in 0..100 {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
            let tmp = dir.join(tmp_name);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
            let mut file = match options.open(&tmp) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let written = writeln!(file, "{}", std::process::id())
                .and_then(|()| file.sync_all())
                .and_then(|()| fs::rename(&tmp, path));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            return Ok(Self {
                path: path.to_owned(),
            });
        }
        Err(last.expect("the loop ran at least once"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok() == Some(std::process::id()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Why a pid file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot read the pid file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Anything but one number from 2 up is refused: 0 and -1 mean "my
    /// process group" and "every process" to kill(2), and 1 is init.
    #[error("the pid file {} does not hold a process ID", .path.display())]
    Invalid { path: PathBuf },
}

/// The pid in the pid file at `path`: one decimal number from 2 to
/// `i32::MAX`, optionally followed by a newline. The file is read up to a
/// few bytes, so a huge file or a FIFO with a writer costs nothing.
pub(crate) fn read_pid(path: &Path) -> Result<u32, PidFileError> {
    let read = |source| PidFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(read)?;
    if !file.metadata().map_err(read)?.is_file() {
        return Err(PidFileError::Invalid {
            path: path.to_owned(),
        });
    }
    let mut text = String::new();
    file.take(32)
        .read_to_string(&mut text)
        .map_err(|_| PidFileError::Invalid {
            path: path.to_owned(),
        })?;
    let digits = text.strip_suffix('\n').unwrap_or(&text);
    digits
        .parse::<u32>()
        .ok()
        .filter(|pid| {
            digits.bytes().all(|b| b.is_ascii_digit()) && (2..=i32::MAX as u32).contains(pid)
        })
        .ok_or_else(|| PidFileError::Invalid {
            path: path.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_back_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.pid");
        fs::write(&path, "stale\n").expect("write");
        let file = PidFile::create(&path).expect("create");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
        assert_eq!(read_pid(&path).expect("valid"), std::process::id());
        drop(file);
        assert!(!path.exists(), "removed at drop");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert!(names.is_empty(), "nothing left behind: {names:?}");
    }

    #[test]
    fn another_daemons_pid_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.pid");
        let file = PidFile::create(&path).expect("create");
        fs::write(&path, "4242\n").expect("another daemon took it");
        drop(file);
        assert_eq!(fs::read_to_string(&path).expect("kept"), "4242\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("precious");
        fs::write(&target, "keep me").expect("write");
        let path = dir.path().join("w.pid");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let _file = PidFile::create(&path).expect("create");
        assert_eq!(fs::read_to_string(&target).expect("read"), "keep me");
        assert!(!fs::symlink_metadata(&path).expect("exists").is_symlink());
    }

    /// kill(2) reads 0 as "my process group" and -1 as "every process I
    /// may signal": a pid file must never make `--reload` send either.
    #[test]
    fn only_a_plausible_pid_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.pid");
        for bad in [
            "",
            "0",
            "1",
            "-1",
            "+5",
            " 5",
            "5 ",
            "5\n\n",
            "2147483648",
            "99999999999",
            "x",
            "5\0",
        ] {
            fs::write(&path, bad).expect("write");
            assert!(
                matches!(read_pid(&path), Err(PidFileError::Invalid { .. })),
                "{bad:?} accepted"
            );
        }
        for (good, pid) in [("2", 2), ("4242\n", 4242), ("2147483647", i32::MAX as u32)] {
            fs::write(&path, good).expect("write");
            assert_eq!(read_pid(&path).expect(good), pid);
        }
        assert!(matches!(
            read_pid(dir.path()),
            Err(PidFileError::Invalid { .. } | PidFileError::Read { .. })
        ));
        assert!(matches!(
            read_pid(&dir.path().join("missing")),
            Err(PidFileError::Read { .. })
        ));
    }
}
