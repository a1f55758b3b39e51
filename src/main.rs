//! The `watchcache` binary.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use watchcache::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let filter = match &args.log_level {
                Some(level) => EnvFilter::try_new(level),
                None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
            };
            let filter = match filter {
                Ok(filter) => filter,
                Err(error) => {
                    eprintln!("error: invalid log filter: {error}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime starts");
            match runtime.block_on(watchcache::server::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
