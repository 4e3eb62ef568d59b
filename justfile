# Convenience recipes. Every recipe is a plain cargo command: `just` is never required.

# Run every test (SQLite always; PostgreSQL when QUIRE_TEST_DATABASE_URL is set).
test:
    cargo test --workspace

# The retry story: real `quire worker` processes killed, paused, stopped and rate limited (each
# scenario on SQLite, and on PostgreSQL too when QUIRE_TEST_DATABASE_URL is set), the
# stage-by-stage crash tests of the pipeline, and the PostgreSQL fault run (a private server
# restarted mid-run, connections terminated).
test-retry-scenarios:
    cargo test -p quire --features failpoints --test retry_scenarios --test pipeline_resume --test pipeline_embedder --test pipeline_openai --test batch_embeddings --test postgres_faults

# Everything against the local PostgreSQL too.
test-postgres:
    QUIRE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --workspace

# The dashboard's browser test in headless Chromium, saving its screenshots under target/screenshots.
screenshots:
    mkdir -p target/screenshots
    QUIRE_SCREENSHOT_DIR="$PWD/target/screenshots" cargo test -p quire --test dashboard_browser

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

# Queue benchmarks (a package outside the workspace); results go to BENCHMARKS.md by hand.
bench:
    cargo run --release --manifest-path bench/Cargo.toml -- --all
