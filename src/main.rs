fn main() -> std::process::ExitCode {
    spe::cli::main()
}
