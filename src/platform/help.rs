//! What `--help` says for the flags whose meaning differs by OS: the
//! default config path, what a stop does to sessions, how `--reload`
//! reaches the daemon, and the flags only Windows acts on. `cli` puts them
//! on its flags (`Cli::command_for_os`).

#[cfg(unix)]
mod os {
    pub const CFGFILE: &str = "Config file [default: /etc/wininetd.conf]";
    pub const SHUTDOWN_GRACE: &str =
        "On stop, how long sessions get after SIGTERM before SIGKILL, in seconds [default: 5]";
    pub const PIDFILE: &str = "Write the daemon's process ID to FILE, removed at stop; --reload signals \
         the process it names [default as root without --debug: /run/wininetd.pid]";
    pub const RELOAD: &str = "Check the running daemon's config, then ask it to reload it \
         (systemctl reload under systemd, else SIGHUP to the process its pid file names)";
    pub const AUTO_START: &str = "With --install on Windows: start the service with Windows (the systemd unit is always enabled)";
    pub const DEMAND_START: &str = "With --install on Windows: start the service on demand";
    pub const LOG_SESSIONS: &str = "On Windows: also send each session's start and end to the \
         Event Log (here every line goes to the journal or syslog anyway)";
}

#[cfg(windows)]
mod os {
    pub const CFGFILE: &str = r"Config file [default: %WINDIR%\wininetd.conf]";
    pub const SHUTDOWN_GRACE: &str = "Not used on Windows: a stop ends every session's programs \
         at once (they have no console to be asked to stop through)";
    pub const PIDFILE: &str = "Write the daemon's process ID to FILE, removed at stop (--reload \
         goes through the service manager and does not need it)";
    pub const RELOAD: &str = "Check the installed service's config, then ask the service to \
         reload it (the service manager's ParamChange)";
    pub const AUTO_START: &str = "With --install: start the service with Windows";
    pub const DEMAND_START: &str = "With --install: start the service on demand, as WinInetd's \
         [default for a new service; reinstalling keeps the start type]";
    pub const LOG_SESSIONS: &str = "Also send each session's start and end to the Event Log \
         (errors and warnings always go there); --install keeps it with the service's parameters";
}

pub use os::*;
