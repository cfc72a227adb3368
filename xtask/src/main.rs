//! `cargo xtask`: the project's test matrix, benchmarks and CI entry point (being built).

fn main() {
    eprintln!("cargo xtask: not implemented yet");
    std::process::exit(2);
}
