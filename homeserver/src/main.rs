use std::process::ExitCode;

fn main() -> ExitCode {
    homeserver::cli::main()
}
