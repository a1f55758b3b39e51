//! The `watchcache` binary.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use watchcache::cli::{Cli, Command, LogFormat};

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
            // Colour codes only for a terminal: a file or a log shipper gets plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
            match args.log_format {
                LogFormat::Text => logs.with_ansi(ansi).init(),
                LogFormat::Json => logs.json().with_current_span(false).init(),
            }
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
