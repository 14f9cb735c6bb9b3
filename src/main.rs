//! The binary: parse the command line, set up logging, run the command. Nothing else lives
//! here, so tests drive the same code through the library.

use std::process::ExitCode;

use clap::Parser;
use vercel_secret_rotator::{cli, exit, logging};

fn main() -> ExitCode {
    // Not dumpable, before any secret is read: the tokens and new credentials live in this
    // process's memory. No core file (systemd's watchdog aborts a hung daemon with SIGABRT),
    // and no ptrace or /proc/PID/mem reads by other processes of this user, such as the
    // provider programs it runs (exec makes them dumpable again; they hold no token).
    let not_dumpable =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    // Owner-only for everything this process creates (state, sockets, temp files), before
    // anything is created. The state store also sets modes explicitly; this is the backstop.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = cli::Cli::parse();
    logging::init(args.log_format);
    if let Err(e) = not_dumpable {
        // Cannot happen on Linux (prctl accepts 0 from any process); say so if it does.
        tracing::warn!(
            "could not make the process non-dumpable; a core dump may hold secrets: {e}"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ROTATION_FAILED);
        }
    };
    runtime.block_on(cli::run(args))
}
