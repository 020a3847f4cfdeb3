//! The `barrage` binary; the command line itself is `barrage::cli`.

fn main() -> std::process::ExitCode {
    barrage::cli::main_with_args(std::env::args_os())
}
