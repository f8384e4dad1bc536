//! The `danmaku` binary: parse the command line, run it on a multi-threaded runtime, turn the
//! outcome into an exit status. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = danmaku_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("danmaku: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(danmaku_cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("danmaku: {e}");
            e.exit_code()
        }
    }
}
