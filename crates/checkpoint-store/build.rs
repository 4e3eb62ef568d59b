//! `sqlx::migrate!` embeds the migrations when the crate compiles; without this, adding a
//! migration file changes no source file, and an incremental build keeps the old set.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
