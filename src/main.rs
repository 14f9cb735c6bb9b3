//! The binary: parse the command line, set up logging, run the command. Nothing else lives
//! here, so tests drive the same code through the library.

use std::process::ExitCode;

use clap::Parser;
use vercel_secret_rotator::{cli, exit, logging};

fn main() -> ExitCode {
    // Owner-only for everything this process creates (state, sockets, temp files), before
    // anything is created. The state store also sets modes explicitly; this is the backstop.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = cli::Cli::parse();
    logging::init(args.log_format);
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
