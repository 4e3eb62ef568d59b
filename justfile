# Convenience recipes. Every recipe is a plain cargo command: `just` is never required.

# Run every test (SQLite always; PostgreSQL when QUIRE_TEST_DATABASE_URL is set).
test:
    cargo test --workspace

# The retry-scenario suite: real `quire worker` processes killed and restarted.
test-retry-scenarios:
    cargo test -p quire --features failpoints --test retry_scenarios -- --test-threads=1

# Process the generated sample book with the local embedder.
demo:
    cargo run --release -p quire -- process fixtures/sample.epub

# Regenerate the EPUB fixtures.
fixtures:
    cargo run -p epub-fixtures

# Lints as CI sees them.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --all --check

# Queue benchmarks; results go to BENCHMARKS.md by hand.
bench:
    cargo run --release -p quire-bench
