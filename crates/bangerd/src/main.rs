fn main() -> std::process::ExitCode {
    bangerd::main_entry()
}
