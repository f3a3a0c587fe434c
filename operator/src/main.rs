use std::process::ExitCode;

use clap::Parser as _;
use sei_operator::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(sei_operator::run::run(*args))),
        Command::Workflow(cmd) => sei_operator::run::workflow(cmd),
        Command::Plan(cmd) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(sei_operator::run::plan(cmd)))
            .map(|out| print!("{out}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sei-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
