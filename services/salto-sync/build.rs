// The migrations are embedded by `sqlx::migrate!`; rebuild when one is added or changed, or the
// binary would silently lack it (sqlx's recommended build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
