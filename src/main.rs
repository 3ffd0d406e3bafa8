//! The `maily-deploy` binary: parse, set up logging, run, map the error to
//! an exit code. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use maily_deploy::{cli::Cli, commands, error, exit_code, logging, output, usage};

fn main() -> ExitCode {
    // `COMPLETE=bash maily-deploy ...`: the shell asking for a Tab's
    // candidates (see `maily_deploy::completion`); answered, then exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let args: Vec<String> = std::env::args().collect();
    // Every value a message might repeat, so none is echoed whole past
    // 80 bytes (README, exit codes): the command line, and the variables
    // standing for its flags.
    let mut inputs = args.clone();
    inputs.extend(
        [
            "KUBECONFIG",
            "MAILY_MANIFESTS_DIR",
            "MAILY_TRAFFIC_STEPS",
            "MAILY_GRACE",
        ]
        .iter()
        .filter_map(|name| std::env::var(name).ok()),
    );
    error::register_inputs(&inputs);
    let parsed = Cli::command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        // clap prints help and version to stdout with 0, errors to stderr
        // with 2; where its words mislead (a misspelled verb, a variable
        // named as its flag, `--version extra`), ours instead.
        Err(e) => {
            if let Some(message) = usage::clap_error_message(&e, &args) {
                output::print_error(&error::fail(error::Kind::Usage, message));
                return code(exit_code::USAGE);
            }
            if !e.use_stderr() {
                let _ = e.print();
                return code(e.exit_code());
            }
            // clap stops at the first value it refuses: every one, at once.
            if matches!(
                e.kind(),
                clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
            ) {
                let all = usage::every_invalid_value(&Cli::command(), &args);
                if all.len() > 1 {
                    let mut err = anstream::stderr().lock();
                    for said in &all {
                        let _ = writeln!(err, "{}", error::clip_echoed(said));
                    }
                    let _ = writeln!(err, "\nFor more information, try '--help'.");
                    return code(exit_code::USAGE);
                }
            }
            // clap's message, with any value it repeats clipped.
            let rendered = e.render().ansi().to_string();
            let mut err = anstream::stderr().lock();
            let _ = write!(err, "{}", error::clip_echoed(&rendered));
            return code(e.exit_code());
        }
    };
    if let Err(e) = usage::check(&matches, &args) {
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
