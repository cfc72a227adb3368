//! Benchmarks (being written): see `cargo xtask bench`.

fn main() {
    eprintln!("cachier-bench: not written yet");
    std::process::exit(2);
}
