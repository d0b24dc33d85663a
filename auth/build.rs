// `#[sqlx::test(migrations = "../migrations")]` embeds migrations/ in the tests at compile time;
// without this, a changed migration does not rebuild them and they test the old schema.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
