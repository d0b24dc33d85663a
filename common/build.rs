// `sqlx::migrate!` (common/src/db.rs) embeds migrations/ at compile time; without this, a new
// migration file does not rebuild common, and the binaries run the old schema.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
