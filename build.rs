//! The migrations folder is embedded in the binary (the fallback when
//! MIGRATIONS_DIR is absent); rebuild when a migration is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
