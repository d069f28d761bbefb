# Shortcuts over the scripts (`just` is optional: every recipe is one script or cargo call).

# Run the demo on embedded defaults (README's first command).
demo *ARGS:
    scripts/demo {{ARGS}}

# The whole test suite (README's second command).
test *ARGS:
    scripts/test {{ARGS}}

# Build every plugin to target/wasm/<name>.{wasm,toml}.
plugins:
    scripts/build-plugins

# The benchmarks whose figures go into BENCHMARKS.md.
bench: plugins
    cargo bench -p ledgerhost-runtime --bench plugin
    cargo bench -p ledgerhost --bench pipeline
    cargo bench -p ledgerhost --bench consumer
    cargo bench -p ledgerhost --bench instances
    cargo bench -p ledgerhost-ledger --features pubsub --bench pubsub

# Formatting and lints as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
