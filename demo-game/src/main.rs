//! `hoard-demo`: the demo game and its tools; see the library's documentation.

/// mimalloc: per-thread free lists suit a server's and the bots' many small
/// buffers freed on other threads than they were allocated on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    quiet_on_closed_pipe();
    std::process::exit(hoard_demo::run_cli());
}

/// `hoard-demo cache inspect | head` closes the pipe early; Rust's `println!`
/// then panics. A closed stdout means the reader has what it wanted: exit
/// quietly with the shell's code for SIGPIPE instead of printing a panic.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
