//! The `ledgerhost` binary under test: built as part of this package so the end-to-end tests
//! can run it as a real process (and SIGKILL it) via `CARGO_BIN_EXE_ledgerhost-under-test`.

fn main() -> std::process::ExitCode {
    ledgerhost::cli::main()
}
