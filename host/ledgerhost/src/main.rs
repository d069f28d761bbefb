//! The `ledgerhost` command.

#[global_allocator]
static ALLOCATOR: ledgerhost::Allocator = ledgerhost::Allocator;

fn main() -> std::process::ExitCode {
    ledgerhost::cli::main()
}
