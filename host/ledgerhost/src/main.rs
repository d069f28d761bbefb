//! The `ledgerhost` command.

fn main() -> std::process::ExitCode {
    ledgerhost::cli::main()
}
