//! The `maily-deploy` binary: parse, set up logging, run, map the error to
//! an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use maily_deploy::{cli::Cli, commands, error, exit_code, logging, output, usage};

fn main() -> ExitCode {
    // `COMPLETE=bash maily-deploy ...`: the shell asking for a Tab's
    // candidates (see `maily_deploy::completion`); answered, then exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let args: Vec<String> = std::env::args().collect();
    let parsed = Cli::command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        // clap prints help and version to stdout with 0, errors to stderr
        // with 2; a misspelled verb is said as such.
        Err(e) => {
            if e.use_stderr()
                && let Some(message) = usage::misspelled_command(&args)
            {
                output::print_error(&error::fail(error::Kind::Usage, message));
                return code(exit_code::USAGE);
            }
            let _ = e.print();
            return code(e.exit_code());
        }
    };
    if let Err(e) = usage::check(&matches) {
        return code(commands::refused(&cli, &e));
    }
    let color = !cli.global.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if !color {
        anstream::ColorChoice::Never.write_global();
    }
    logging::init(cli.global.verbose, cli.global.quiet, color);
    // Both kube and reqwest use rustls; one crypto provider for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            output::print_error(&anyhow::Error::new(e).context("starting the async runtime"));
            return code(exit_code::FAILURE);
        }
    };
    code(runtime.block_on(commands::dispatch(cli)))
}

fn code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
