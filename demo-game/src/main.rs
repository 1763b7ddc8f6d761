//! `hoard-demo`: the demo game and its tools; see the library's documentation.

fn main() {
    std::process::exit(hoard_demo::run_cli());
}
